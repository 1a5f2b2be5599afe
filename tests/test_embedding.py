"""embedding_update sparse: the same weights and AdamW state as the dense run, with and without gradient
accumulation, after a resume (from a sparse or a dense checkpoint); refused or fallen back where it is not exact."""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT

TOLERANCE = 1e-6  # fp32; in practice the runs agree bit for bit


def argv(model_dir: Path, out: Path, mode: str, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir), "--train_file", str(ROOT / "data/example.jsonl"),
        "--max_train_samples", "64", "--output_dir", str(out), "--do_train", "--max_seq_length", "64",
        "--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
        "--max_grad_norm", "0.5",  # clipping engaged: the global norm must include the sparse gradient
        "--save_strategy", "steps", "--save_steps", "4", "--use_cpu", "true", "--report_to", "none",
        "--seed", "0", "--disable_tqdm", "true", "--embedding_update", mode, *extra,
    ]


def train(model_dir: Path, out: Path, mode: str, *extra: str) -> Path:
    from seqcls import train as recipe

    recipe.main(argv(model_dir, out, mode, *extra))
    return out


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def weights(out: Path) -> dict:
    return load_file(str(out / "model.safetensors"))


def optimizer_state(checkpoint: Path) -> dict:
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)["state"]
    return {f"{i}.{k}": v for i, s in state.items() for k, v in s.items()}


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory) -> dict:
    """8 optimizer steps of each mode (checkpoints after 4 and 8), and 4 steps with accumulation over 2."""
    base = tmp_path_factory.mktemp("embedding")
    out = {}
    for mode in ("dense", "sparse"):
        out[mode] = train(tiny_model_dir, base / mode, mode)
        out[f"{mode}-accumulated"] = train(tiny_model_dir, base / f"{mode}-acc", mode,
                                           "--gradient_accumulation_steps", "2")
    return out


def test_sparse_update_equals_dense_adamw(runs, tiny_model_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="seqcls"):
        train(tiny_model_dir, tmp_path / "again", "auto", "--max_steps", "1")
    assert any("embedding_update auto: sparse" in r.getMessage() for r in caplog.records), "auto did not pick sparse"
    dense, sparse = runs["dense"], runs["sparse"]
    assert max_difference(weights(dense), weights(sparse)) <= TOLERANCE
    assert max_difference(optimizer_state(dense / "checkpoint-8"), optimizer_state(sparse / "checkpoint-8")) <= TOLERANCE
    # the run moved the embedding rows the data uses and left the others exactly where they started
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    key = "model.embed_tokens.weight"
    moved = (weights(sparse)[key] != start[key]).any(dim=1)
    assert 0 < int(moved.sum()) < moved.numel() // 2


def test_sparse_update_equals_dense_with_gradient_accumulation(runs):
    dense, sparse = runs["dense-accumulated"], runs["sparse-accumulated"]
    assert max_difference(weights(dense), weights(sparse)) <= TOLERANCE
    assert max_difference(optimizer_state(dense / "checkpoint-4"), optimizer_state(sparse / "checkpoint-4")) <= TOLERANCE


@pytest.mark.parametrize("source", ["sparse", "dense"])
def test_resume_continues_exactly(runs, tiny_model_dir, tmp_path, source):
    """Resumed from step 4 (a sparse run's checkpoint, or a dense run's: the state has torch's layout), the
    sparse run ends where the uninterrupted run does: the touched rows are rebuilt from the loaded moments."""
    out = train(tiny_model_dir, tmp_path / "resumed", "sparse",
                "--resume_from_checkpoint", str(runs[source] / "checkpoint-4"))
    assert max_difference(weights(runs[source]), weights(out)) <= TOLERANCE
    assert max_difference(optimizer_state(runs[source] / "checkpoint-8"),
                          optimizer_state(out / "checkpoint-8")) <= TOLERANCE


def arguments(**overrides) -> SimpleNamespace:
    """The TrainingArguments fields embedding_update reads (world_size is a property of the launch)."""
    values = dict(embedding_update="auto", weight_decay=0.0, optim="adamw_torch_fused", world_size=1, fsdp=None,
                  deepspeed=None, fp16=False, device=torch.device("cpu"))
    return SimpleNamespace(**{**values, **overrides})


@pytest.mark.parametrize("overrides, reason", [
    ({"weight_decay": 0.01}, "weight_decay"),
    ({"fsdp": "full_shard"}, "FSDP and DeepSpeed"),
    ({"deepspeed": "ds.json"}, "FSDP and DeepSpeed"),
    ({"optim": "adafactor"}, "optim adafactor"),
    ({"fp16": True}, "fp16"),
])
def test_not_exact_falls_back_under_auto_and_is_refused_under_sparse(tiny_model_dir, overrides, reason):
    from transformers import AutoModelForSequenceClassification

    from seqcls.embedding import plan_embedding_update
    from seqcls.errors import UsageError

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    assert plan_embedding_update(model, arguments(**overrides)) is None
    assert not model.get_input_embeddings().sparse
    with pytest.raises(UsageError, match=reason):
        plan_embedding_update(model, arguments(embedding_update="sparse", **overrides))


def test_ddp_leaves_the_sparse_embedding_out_of_its_buckets(tiny_model_dir):
    """Under several processes the sparse embedding is not DDP's to all-reduce (its rows are all-reduced by
    embedding.all_reduce_rows; tests/test_distributed.py runs 2 processes); the other parameters stay DDP's."""
    from transformers import AutoModelForSequenceClassification

    from seqcls.embedding import plan_embedding_update

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    assert plan_embedding_update(model, arguments(world_size=2)) is model.get_input_embeddings().weight
    assert model._ddp_params_and_buffers_to_ignore == ["model.embed_tokens.weight"]


def test_frozen_or_tied_embedding(tiny_model_dir):
    """A frozen embedding (freeze_embeddings, LoRA) needs nothing; one shared with another module stays dense."""
    from transformers import AutoModelForSequenceClassification

    from seqcls.embedding import plan_embedding_update
    from seqcls.modeling import freeze_input_embeddings

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    assert model.config.tie_word_embeddings and model.get_output_embeddings() is None  # no LM head to tie to
    model.extra = torch.nn.Linear(4, 4)
    model.extra.weight = model.get_input_embeddings().weight
    assert plan_embedding_update(model, arguments()) is None
    del model.extra
    freeze_input_embeddings(model)
    assert plan_embedding_update(model, arguments(embedding_update="sparse")) is None
