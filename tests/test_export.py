"""ONNX export and the ONNX Runtime backend: same probabilities as the torch Classifier (tiny and small Qwen2
mask-free, MiniLM with its attention mask), int8 sanity, the CLI, and bad input. Each model is exported once per
module."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import MINILM, ROOT, run_cli
from seqcls import export, predict
from seqcls.errors import UsageError
from seqcls.labels import SINGLE
from test_predict import build_classifier, texts_of

TEXTS = texts_of() + ["x", "一个很长很长的句子，" * 8]  # lengths 1..~60 tokens: sorted batches are padded


def build_minilm(out: Path) -> Path:
    """MiniLM (a real pretrained encoder: token_type_ids, attention mask) with a seeded random 3-label head."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    names = ["neg", "neu", "pos"]
    model = AutoModelForSequenceClassification.from_pretrained(
        MINILM, num_labels=3, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(MINILM).save_pretrained(out)
    (out / "seqcls.json").write_text(json.dumps({"label_space": {"problem_type": SINGLE, "names": names},
                                                 "max_seq_length": 64}), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def dirs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    tiny = build_classifier(tiny_model_dir, root / "tiny", SINGLE, ["中立", "消极", "积极"])
    minilm = build_minilm(root / "minilm")
    return {"tiny": tiny, "minilm": minilm,
            "tiny_onnx": export.export(tiny, root / "tiny-onnx"),
            "tiny_int8": export.export(tiny, root / "tiny-int8", quantize="int8"),
            "minilm_onnx": export.export(minilm, root / "minilm-onnx")}


def probabilities(model_dir: Path, **kw) -> np.ndarray:
    clf = predict.Classifier.from_pretrained(model_dir, **kw)
    rows = clf.predict(TEXTS, batch_size=7)
    names = clf.label_space.names
    return np.array([[row["probabilities"][n] for n in names] for row in rows])


def test_onnx_dir_is_a_model_directory(dirs):
    out = dirs["tiny_onnx"]
    assert {"model.onnx", "config.json", "seqcls.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    settings = json.loads((out / "seqcls.json").read_text(encoding="utf-8"))
    assert settings["label_space"]["names"] == ["中立", "消极", "积极"] and settings["max_seq_length"] == 64
    assert settings["export"]["inputs"] == ["input_ids"]  # the causal decoder is exported mask-free
    assert not list(out.parent.glob(".tiny-onnx.*"))  # the temporary directory was renamed, none left behind


@pytest.mark.parametrize("name", ["tiny", "minilm"])
def test_fp32_onnx_matches_torch(dirs, name):
    clf = predict.Classifier.from_pretrained(dirs[f"{name}_onnx"])
    assert isinstance(clf.backend, predict.OnnxBackend) and clf.model is None
    assert clf.mask_free == (name == "tiny")
    np.testing.assert_allclose(probabilities(dirs[f"{name}_onnx"]), probabilities(dirs[name]), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_fp32_onnx_matches_torch_on_the_small_qwen2(tmp_path):
    """The benchmarks' small random Qwen2 (hidden 256, 4 layers, 41.7M parameters): deeper and wider than the tiny
    one, so rounding differences in the exported graph would grow; still within 1e-4."""
    from seqcls import tiny

    small = build_classifier(tiny.build(tmp_path / "base", size="small", seed=0), tmp_path / "small", SINGLE,
                             ["中立", "消极", "积极"])
    onnx_dir = export.export(small, tmp_path / "small-onnx")
    np.testing.assert_allclose(probabilities(onnx_dir), probabilities(small), atol=1e-4, rtol=0)


def test_int8_agrees_with_fp32(dirs):
    fp32, int8 = probabilities(dirs["tiny"]), probabilities(dirs["tiny_int8"])
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.9
    onnx_files = {k: (dirs[k] / "model.onnx").stat().st_size for k in ("tiny_onnx", "tiny_int8")}
    assert onnx_files["tiny_int8"] < onnx_files["tiny_onnx"] / 3  # int8 weights and embedding table


def test_predict_cli_backend_onnx(dirs, tmp_path):
    out = tmp_path / "pred.jsonl"
    proc = run_cli("-m", "seqcls.predict", str(dirs["tiny_onnx"]), str(ROOT / "data" / "example_test.jsonl"),
                   "-o", str(out), "--backend", "onnx", "--batch_size", "5", "--num_threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    expected = predict.Classifier.from_pretrained(dirs["tiny"]).predict(texts_of())
    assert [r["id"] for r in rows] == list(range(len(expected)))
    assert [r["label"] for r in rows] == [r["label"] for r in expected]


def test_out_dir_that_exists_is_refused(dirs, capsys):
    assert export.cli([str(dirs["tiny"]), str(dirs["tiny_onnx"])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exists" in err
    assert not list(dirs["tiny_onnx"].parent.glob(".tiny-onnx.*"))


def test_onnx_dir_without_settings_is_refused(dirs, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.onnx").write_bytes((dirs["tiny_onnx"] / "model.onnx").read_bytes())
    with pytest.raises(UsageError, match="not its settings"):
        predict.Classifier.from_pretrained(bare)


def test_backend_mismatch_is_refused(dirs):
    with pytest.raises(UsageError, match="seqcls-export"):
        predict.Classifier.from_pretrained(dirs["tiny"], backend="onnx")
    with pytest.raises(UsageError, match="backend='onnx'"):
        predict.Classifier.from_pretrained(dirs["tiny_onnx"], backend="torch")
    with pytest.raises(UsageError, match="already an ONNX export"):
        export.export(dirs["tiny_onnx"], dirs["tiny_onnx"].parent / "again")


def test_architecture_the_exporter_cannot_handle(dirs, tmp_path, monkeypatch):
    """A model whose forward torch.export cannot trace: one UsageError naming the architecture, nothing written."""
    import torch

    def untraceable(*args, **kwargs):
        raise RuntimeError("Unsupported: data-dependent control flow")  # as torch.export raises it

    monkeypatch.setattr(torch.onnx, "export", untraceable)
    with pytest.raises(UsageError, match="Qwen2ForSequenceClassification model could not be exported"):
        export.export(dirs["tiny"], tmp_path / "out")
    assert not list(tmp_path.iterdir())
