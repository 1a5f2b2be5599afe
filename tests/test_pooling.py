"""Pooling token (append_eos / cls_token): a marker appended to every text after truncation, a pad token that
differs from it, and the head reading exactly the marker's position with left and right padding."""
from types import SimpleNamespace

import pytest
import torch

from seqcls.data import encode_texts
from seqcls.errors import UsageError
from seqcls.labels import SINGLE, LabelSpace
from seqcls.modeling import configure_tokenizer, load_model, load_tokenizer, pooling_token, pooling_token_id

TEXTS = ["好", "这家店的菜很好吃，送餐也快，下次还点", "太慢了"]


def model_args(model_dir, **kw):
    base = dict(model_name_or_path=str(model_dir), tokenizer_name=None, cache_dir=None, use_fast_tokenizer=True,
                model_revision="main", trust_remote_code=False, padding_side=None, pad_token=None,
                truncation_side=None, append_eos=False, cls_token=None, config_name=None,
                ignore_mismatched_sizes=False, attn_implementation="sdpa")
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    """The Qwen2 tokenizer loaded once (5 s a load); `configured` resets what the policy may change."""
    return load_tokenizer(model_args(tiny_model_dir))


ORIGINAL = {}


def configured(tok, args):
    ORIGINAL.setdefault("post_processor", tok.backend_tokenizer.post_processor)
    tok.backend_tokenizer.post_processor = ORIGINAL["post_processor"]  # no marker yet
    tok.pad_token, tok.padding_side, tok.truncation_side = "<|endoftext|>", "right", "right"
    configure_tokenizer(tok, args)
    return tok


def test_append_eos_switches_qwen_pad_token_to_another_existing_special(tiny_model_dir, tokenizer):
    assert tokenizer.pad_token == "<|endoftext|>"  # Qwen2's eos is also its pad token
    args = model_args(tiny_model_dir, append_eos=True)
    tok = load_tokenizer(args)  # the whole loading path once
    assert pooling_token(args, tok) == "<|endoftext|>"
    assert tok.pad_token == "<|im_end|>" and tok.pad_token_id == 151645  # an existing id: no embedding resize


def test_marker_survives_truncation_on_both_sides(tiny_model_dir, tokenizer):
    long_text = "这家店的菜很好吃，送餐也快，下次还点。" * 5
    for side in ("right", "left"):
        args = model_args(tiny_model_dir, append_eos=True, truncation_side=side)
        tok = configured(tokenizer, args)
        marker = pooling_token_id(tok, pooling_token(args, tok))
        ids = encode_texts(tok, [long_text, "好"], None, max_length=8)["input_ids"]
        assert len(ids[0]) == 8 and ids[0][-1] == marker and ids[1][-1] == marker
        full = tok(long_text)["input_ids"][:-1]  # the tokenizer itself appends the marker
        assert ids[0][:-1] == (full[:7] if side == "right" else full[-7:])
        padded = encode_texts(tok, ["好"], None, max_length=8, padding=True)
        assert len(padded["input_ids"][0]) == 8 and marker in padded["input_ids"][0]


@pytest.mark.parametrize("side", ["right", "left"])
def test_head_pools_the_marker_position(tiny_model_dir, tokenizer, side):
    args = model_args(tiny_model_dir, append_eos=True, padding_side=side)
    tok = configured(tokenizer, args)
    marker = pooling_token_id(tok, pooling_token(args, tok))
    model = load_model(args, LabelSpace(SINGLE, ("a", "b", "c")), tok).eval()
    assert model.config.pad_token_id == tok.pad_token_id != marker
    batch = tok.pad(encode_texts(tok, TEXTS, None, max_length=32), return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
        for i, text in enumerate(TEXTS):
            real = batch["attention_mask"][i].nonzero().flatten()
            pos = int(real[-1])  # the last real token of the row
            assert batch["input_ids"][i, pos] == marker
            assert (batch["input_ids"][i, real] != tok.pad_token_id).all()  # no pad id inside the text
            # the logits are the head applied to the hidden state at the marker's position
            expected = model.score(out.hidden_states[-1][i, pos])
            torch.testing.assert_close(out.logits[i], expected, rtol=1e-5, atol=1e-5)
            alone = tok.pad(encode_texts(tok, [text], None, max_length=32), return_tensors="pt")
            torch.testing.assert_close(model(**alone).logits[0], out.logits[i], rtol=1e-5, atol=1e-5)


def test_marker_is_appended_by_the_saved_tokenizer(tiny_model_dir, tokenizer, tmp_path):
    """What a consumer that knows nothing of seqcls gets (pipeline, vLLM): the saved tokenizer appends the marker
    itself, to pairs too, truncation keeps it last, and appending twice does not add a second one."""
    from transformers import AutoTokenizer

    from seqcls.modeling import append_pooling_token, has_pooling_token

    tok = configured(tokenizer, model_args(tiny_model_dir, cls_token="<|im_end|>"))
    append_pooling_token(tok, "<|im_end|>")  # idempotent
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert has_pooling_token(again, "<|im_end|>") and not has_pooling_token(again, "<|endoftext|>")
    ids = again("这家店的菜很好吃，送餐也快，下次还点。" * 5, truncation=True, max_length=8)["input_ids"]
    assert len(ids) == 8 and ids[-1] == 151645 and ids[:-1].count(151645) == 0
    assert again("好", "快")["input_ids"][-1] == 151645


def test_marker_with_an_encoder_template(tmp_path):
    """BERT's [CLS] $A [SEP] template is kept, with the marker after it (tokenizers cannot chain two templates)."""
    from transformers import AutoTokenizer

    from conftest import MINILM
    from seqcls.modeling import append_pooling_token

    tok = AutoTokenizer.from_pretrained(MINILM)
    plain = tok("a b")["input_ids"]
    append_pooling_token(tok, "[MASK]")
    assert tok("a b")["input_ids"] == plain + [tok.mask_token_id]
    pair = tok("a b", "c")
    assert pair["input_ids"][-1] == tok.mask_token_id and pair["token_type_ids"][-1] == 1
    assert len(tok("a " * 50, truncation=True, max_length=6)["input_ids"]) == 6


def test_pooling_token_mistakes(tiny_model_dir, tokenizer):
    with pytest.raises(UsageError, match="is not in the tokenizer's vocabulary"):
        configured(tokenizer, model_args(tiny_model_dir, cls_token="<|no such token|>"))
    with pytest.raises(UsageError, match="also the pooling token"):
        configured(tokenizer, model_args(tiny_model_dir, cls_token="<|im_end|>", pad_token="<|im_end|>"))
    tok = configured(tokenizer, model_args(tiny_model_dir, cls_token="<|im_end|>"))
    assert tok.pad_token == "<|endoftext|>"  # already different from the marker: kept
