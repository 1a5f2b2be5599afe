"""Tokenization is cached by content: a rerun reuses the datasets cache, any change that matters re-tokenizes."""
import datasets

from conftest import ROOT
from seqcls.data import Columns, tokenize, tokenization_fingerprint
from seqcls.labels import build_label_space


def test_rerun_reuses_the_cache_and_changes_do_not(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    raw = datasets.load_dataset("json", data_files={"train": str(ROOT / "data/example.jsonl")},
                                cache_dir=str(tmp_path / "cache"))
    cols = Columns(text=["text"])
    labels = build_label_space(raw["train"]["label"])
    first = tokenize(raw, tokenizer, labels, cols, 64)["train"]
    again = tokenize(raw, tokenizer, labels, cols, 64)["train"]
    assert first.cache_files and again.cache_files == first.cache_files  # the same Arrow file, read back
    assert again._fingerprint == first._fingerprint
    shorter = tokenize(raw, tokenizer, labels, cols, 8)["train"]
    assert shorter._fingerprint != first._fingerprint and max(map(len, shorter["input_ids"])) == 8
    base = tokenization_fingerprint(tokenizer, labels, cols, 64, False)
    tokenizer.padding_side = "left" if tokenizer.padding_side == "right" else "right"
    assert tokenization_fingerprint(tokenizer, labels, cols, 64, False) != base
    assert tokenization_fingerprint(tokenizer, None, cols, 64, False) != base
