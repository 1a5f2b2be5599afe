"""Packed training computes what padded training computes: same logits, same loss, same gradients (fp32, 1e-5)."""

import pytest
import torch

from conftest import MINILM
from seqcls.loss import ClassificationLoss
from seqcls.packing import LAST_TOKEN_KEY, PackedForward, PackingCollator, pack_rows

TEXTS = [
    "这家店的外卖很好吃，送餐也快",
    "Terrible.",
    "The soup was cold and the delivery took two hours, never again.",
    "还行",
    "I love it! Five stars, would order again tomorrow and the day after.",
    "送错了",
]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3, dtype=torch.float32,
                                                               attn_implementation="sdpa")
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def padded_logits(model, tokenizer, side):
    tokenizer.padding_side = side
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    return model(**batch).logits


def packed_logits(model, tokenizer, row_length):
    features = [{"input_ids": ids, "labels": i % 3} for i, ids in enumerate(tokenizer(TEXTS)["input_ids"])]
    batch = PackingCollator(tokenizer.pad_token_id, row_length)(features)
    last = batch.pop(LAST_TOKEN_KEY)
    labels = batch.pop("labels")
    return PackedForward(model, last)(**batch).logits, batch, labels


@pytest.mark.parametrize("row_length", [None, 40], ids=["one-row", "rows-of-40"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_packed_logits_and_loss_equal_padded(model_and_tokenizer, side, row_length):
    model, tokenizer = model_and_tokenizer
    loss_fn = ClassificationLoss("single_label_classification")
    labels = torch.tensor([i % 3 for i in range(len(TEXTS))])

    model.zero_grad()
    reference = padded_logits(model, tokenizer, side)
    ref_loss = loss_fn({"logits": reference}, labels, num_items_in_batch=len(TEXTS))
    ref_loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    packed, batch, packed_labels = packed_logits(model, tokenizer, row_length)
    loss = loss_fn({"logits": packed}, packed_labels, num_items_in_batch=len(TEXTS))
    loss.backward()

    # rows of 40 are cut down to the batch's longest example: several examples per row, several rows
    longest = max(len(ids) for ids in tokenizer(TEXTS)["input_ids"])
    assert batch["input_ids"].shape == ((1, sum(len(ids) for ids in tokenizer(TEXTS)["input_ids"]))
                                        if row_length is None else (3, longest))
    assert "attention_mask" not in batch
    torch.testing.assert_close(packed, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, atol=1e-5, rtol=1e-4, msg=name)


def test_packed_examples_do_not_see_each_other(model_and_tokenizer):
    """Changing one example changes no other example's logits: the mask keeps them apart."""
    model, tokenizer = model_and_tokenizer
    before, *_ = packed_logits(model, tokenizer, None)
    TEXTS[0], saved = "完全不同的第一条评论，长度也不一样啦", TEXTS[0]
    try:
        after, *_ = packed_logits(model, tokenizer, None)
    finally:
        TEXTS[0] = saved
    torch.testing.assert_close(after[1:], before[1:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(after[0], before[0])


def test_collator_layout():
    features = [{"input_ids": [5, 6, 7], "labels": [1.0, 0.0]}, {"input_ids": [8], "labels": [0.0, 1.0]},
                {"input_ids": [9, 10], "labels": [1.0, 1.0]}]
    batch = PackingCollator(pad_token_id=0)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 0, 1]]
    assert batch[LAST_TOKEN_KEY].tolist() == [2, 3, 5]
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (3, 2)
    rows = PackingCollator(pad_token_id=0, row_length=4)(features)
    assert rows["input_ids"].tolist() == [[5, 6, 7], [9, 10, 8]]  # rows as long as the longest example
    assert rows["position_ids"].tolist() == [[0, 1, 2], [0, 1, 0]]
    assert sorted(rows["input_ids"].flatten()[rows[LAST_TOKEN_KEY]].tolist()) == [7, 8, 10]


def test_pack_rows_first_fit_decreasing():
    rows = pack_rows([5, 3, 4, 2, 1], row_length=6)
    assert sorted(i for row in rows for i in row) == [0, 1, 2, 3, 4]
    assert all(sum([5, 3, 4, 2, 1][i] for i in row) <= 6 for row in rows)
    assert len(rows) == 3


def test_packing_auto_is_checked_on_the_model(model_and_tokenizer):
    from seqcls.packing import resolve_packing

    model, tokenizer = model_and_tokenizer
    rows = tokenizer(TEXTS[:3])["input_ids"]
    assert resolve_packing("auto", model, "sdpa", rows, 64) is True
    assert resolve_packing(True, model, "eager", rows, 64) is True
    assert resolve_packing(False, model, "sdpa", rows, 64) is False
    assert model.training is False  # the check leaves the mode as it found it


@pytest.mark.skipif(not MINILM.is_dir(), reason="the MiniLM checkpoint is not installed")
def test_packing_auto_is_off_for_a_bert_model():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from seqcls.errors import UsageError
    from seqcls.packing import resolve_packing

    model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=2)
    rows = AutoTokenizer.from_pretrained(MINILM)(["a short text", "another one here"])["input_ids"]
    assert resolve_packing("auto", model, "sdpa", rows, 64) is False
    with pytest.raises(UsageError, match="packing true: BertForSequenceClassification cannot be trained packed"):
        resolve_packing(True, model, "sdpa", rows, 64)
