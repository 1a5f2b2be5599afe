"""Tokenizer and model loading: pad-token policy, label maps, padding invariance of the pooled logits."""
import pytest
import torch

from seqcls.arguments import ModelArguments
from seqcls.errors import UsageError
from seqcls.labels import build_label_space
from seqcls.modeling import load_model, load_tokenizer, max_length_for

TEXTS = ["外卖送得很快，味道也不错", "一般", "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～", "差评！"]


def load(model_dir, **kwargs):
    args = ModelArguments(model_name_or_path=str(model_dir), **kwargs)
    tokenizer = load_tokenizer(args)
    space = build_label_space(["积极", "消极", "中立"])
    torch.manual_seed(0)
    model = load_model(args, space, tokenizer).eval()
    return tokenizer, model


def test_pad_token_falls_back_to_eos_and_is_saved_in_config(tiny_model_dir):
    tokenizer, model = load(tiny_model_dir)
    assert tokenizer.pad_token_id is not None
    assert model.config.pad_token_id == tokenizer.pad_token_id == 151643
    assert model.config.id2label == {0: "中立", 1: "消极", 2: "积极"}  # sorted names
    assert model.config.problem_type == "single_label_classification"


def test_unknown_pad_token_is_a_usage_error(tiny_model_dir):
    with pytest.raises(UsageError, match="not in the tokenizer's vocabulary"):
        load(tiny_model_dir, pad_token="<no-such-token>")


@pytest.mark.parametrize("side", ["left", "right"])
def test_text_alone_equals_text_in_a_padded_batch(tiny_model_dir, side):
    tokenizer, model = load(tiny_model_dir, padding_side=side)
    assert tokenizer.padding_side == side
    with torch.no_grad():
        alone = torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in TEXTS])
        batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
        assert (batch["attention_mask"] == 0).any()  # there really is padding
        batched = model(**batch).logits
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


def test_max_seq_length_beyond_model_positions(tiny_model_dir):
    tokenizer, model = load(tiny_model_dir)
    assert max_length_for(tokenizer, model, None) == 1024
    with pytest.raises(UsageError, match="beyond the model's limit of 1024"):
        max_length_for(tokenizer, model, 4096)


def test_torch_free_dtype_lists_name_the_dtypes_modeling_loads():
    """seqcls-merge and seqcls-predict list --dtype choices without importing torch; they must offer exactly the
    dtypes modeling.DTYPES maps (a new one there would otherwise be refused on their command lines)."""
    from seqcls import merge, predict
    from seqcls.modeling import DTYPES

    assert sorted(merge.DTYPE_NAMES) == sorted(DTYPES)
    assert sorted(predict.DTYPE_NAMES) == sorted(["auto", *DTYPES])
