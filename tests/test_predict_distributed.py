"""seqcls-predict on several processes: the output is byte for byte what one process writes, whatever the number
of processes, for every problem type and input kind; a killed job resumes; a bad row on one rank stops all.

One `torchrun` launch (2 gloo processes on CPU) runs every command of COMMANDS in turn (this file is its script:
see the bottom), so the model loads and the process start are paid once; the same commands run here in this
process (world size 1) for the reference bytes. Chunks of 3 rows make a few rows many chunks.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [json.loads(line)["text"] for line in (ROOT / "data/example_test.jsonl").read_text(encoding="utf-8").splitlines()]
CHUNK = "3"

# name: (model, input, output, extra options); every command also gets --chunk_rows CHUNK --num_threads 1
COMMANDS = {
    "single": ("single", "single.jsonl", "single.jsonl", ["--id_column", "key"]),
    "multi_csv": ("multi", "multi.csv", "multi.csv", []),
    "regression_parquet": ("regression", "pairs.jsonl", "regression.parquet", []),
    "directory": ("single", "corpus", "directory.jsonl", []),  # a .jsonl and a .parquet, a chunk spans both
    "one_chunk": ("single", "one.txt", "one.jsonl", []),  # more processes than chunks: rank 1 gets none
    "empty": ("single", "empty.jsonl", "empty.jsonl", []),
    "shards": ("single", "single.jsonl", "shards", ["--id_column", "key", "--output_shards"]),
    "skip": ("single", "bad.jsonl", "skip.jsonl", ["--on_error", "skip", "--max_skipped_share", "1"]),
    "bad_row": ("single", "bad.jsonl", "bad.jsonl", []),  # line 8 (chunk 2, rank 0) and line 11 (chunk 3)
    "bad_on_rank_1": ("single", "bad1.jsonl", "bad1.jsonl", []),  # line 5: chunk 1, rank 1's
    "resume": ("single", "resume.jsonl", "resume.jsonl", []),  # started here, interrupted, finished by torchrun
}


def write_inputs(d: Path) -> None:
    def jsonl(name: str, rows: list) -> None:
        (d / name).write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                                      for r in rows), encoding="utf-8")

    jsonl("single.jsonl", [{"key": f"k{i}", "text": t} for i, t in enumerate(TEXTS[:10])] + [""]
          + [{"key": "last", "text": TEXTS[10]}])  # a blank line is not a row
    (d / "multi.csv").write_text("text\n" + "".join(f'"{t}"\n' for t in TEXTS[11:19]), encoding="utf-8")
    jsonl("pairs.jsonl", [{"text": a, "text_pair": b} for a, b in zip(TEXTS[19:26], TEXTS[26:33])])
    (d / "corpus").mkdir()
    jsonl("corpus/a.jsonl", [{"text": t} for t in TEXTS[33:37]])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": TEXTS[37:42], "other": list(range(5))}), d / "corpus/b.parquet",
                   row_group_size=2)
    (d / "one.txt").write_text(TEXTS[42] + "\n", encoding="utf-8")
    (d / "empty.jsonl").write_text("", encoding="utf-8")
    bad = [{"text": t} for t in TEXTS[43:53]]
    bad[7], bad[10:] = {"text": ""}, ["not json"]
    jsonl("bad.jsonl", bad)
    bad1 = [{"text": t} for t in TEXTS[43:50]]
    bad1[4] = {"txt": "x"}
    jsonl("bad1.jsonl", bad1)
    jsonl("resume.jsonl", [{"text": t} for t in TEXTS[:14]])


def argv(models: dict, d: Path, out: Path, name: str) -> list[str]:
    model, source, output, extra = COMMANDS[name]
    return [str(models[model]), str(d / source), "-o", str(out / output), "--chunk_rows", CHUNK,
            "--num_threads", "1", *extra]


def run_all(models: dict, d: Path, out: Path, names) -> dict:
    """Run each command with seqcls.predict.cli; its exit status and stderr by name."""
    from seqcls import predict

    descriptor, real, loaded = predict.Classifier.__dict__["from_pretrained"], predict.Classifier.from_pretrained, {}

    def load_once(model_dir, **kwargs):  # each model once per process, not once per command
        key = (str(model_dir), tuple(sorted(kwargs.items())))
        if key not in loaded:
            loaded[key] = real(model_dir, **kwargs)
        return loaded[key]

    results = {}
    predict.Classifier.from_pretrained = load_once
    try:
        for name in names:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = predict.cli(argv(models, d, out, name))
            results[name] = {"code": code, "stderr": err.getvalue()}
    finally:
        predict.Classifier.from_pretrained = descriptor
    return results


def files(path: Path) -> dict[str, bytes]:
    """Every file under path (or path itself) by relative name, with its bytes."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    from test_predict import build_classifier

    from seqcls.labels import MULTI, REGRESSION, SINGLE

    root = tmp_path_factory.mktemp("dist_models")
    return {
        "single": build_classifier(tiny_model_dir, root / "single", SINGLE, ["中立", "消极", "积极"]),
        "multi": build_classifier(tiny_model_dir, root / "multi", MULTI, ["a", "b", "c"], thresholds=(0.3, 0.5, 0.7)),
        "regression": build_classifier(tiny_model_dir, root / "regression", REGRESSION, [],
                                       text_pair_column_name="text_pair"),
    }


@pytest.mark.slow  # about 40 s on an idle 2-core machine (one torchrun launch of 2 ranks, 11 commands each)
def test_two_processes_write_what_one_writes(models, tmp_path, monkeypatch):
    from seqcls import corpus

    d, one, two = tmp_path / "in", tmp_path / "one", tmp_path / "two"
    for p in (d, one, two):
        p.mkdir()
    write_inputs(d)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    reference = run_all(models, d, one, [n for n in COMMANDS if n != "resume"])
    reference.update(run_all(models, d, one, ["resume"]))

    # A job interrupted after its second chunk (as SIGINT/SIGTERM would; a SIGKILL's temporary file is faked
    # beside it): the finished chunks stay in resume.jsonl.parts/ for the 2-process run to finish.
    real_write, written = corpus.ChunkStore.write, []

    def write_then_stop(self, k, *args):
        counts = real_write(self, k, *args)
        written.append(k)
        if len(written) == 2:
            raise KeyboardInterrupt
        return counts

    monkeypatch.setattr(corpus.ChunkStore, "write", write_then_stop)
    stopped = run_all(models, d, two, ["resume"])["resume"]
    monkeypatch.undo()
    parts = two / "resume.jsonl.parts"
    assert stopped["code"] == 130 and "rerun the same command to resume" in stopped["stderr"]
    assert sorted(p.name for p in parts.glob("*.done.json")) == ["000000.done.json", "000001.done.json"]
    assert not (two / "resume.jsonl").exists()
    (parts / ".000002.jsonl.999999999.dead.tmp").write_text("half a chunk")  # PID 999999999 is not alive

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           __file__, json.dumps({k: str(v) for k, v in models.items()}), str(d), str(two)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]

    for name in COMMANDS:
        want = reference[name]
        for rank, results in enumerate(ranks):
            got = results[name]
            assert got["code"] == want["code"], (name, rank, got, want)
            if rank == 1:  # the main process alone speaks: one line for the whole job
                assert got["stderr"] == "", (name, got)
        assert ranks[0][name]["stderr"].replace(str(two), "OUT") == want["stderr"].replace(str(one), "OUT"), name
    for name in ("single", "multi_csv", "regression_parquet", "directory", "one_chunk", "empty", "shards", "skip",
                 "resume"):
        output = COMMANDS[name][2]
        assert files(two / output) == files(one / output), name
    assert files(two / "skip.jsonl.skipped.jsonl") == files(one / "skip.jsonl.skipped.jsonl")
    for name in ("bad_row", "bad_on_rank_1"):  # nothing written, no work directory left
        assert not (two / COMMANDS[name][2]).exists() and not (two / f"{COMMANDS[name][2]}.parts").exists()
    assert not parts.exists()

    # what the outputs say (the reference's own bytes are checked against the 2-process ones above)
    assert reference["bad_row"]["stderr"] == (f"error: {d}/bad.jsonl:8: the text ('text') is empty; fill it in or "
                                              "remove the row (or --on_error skip)\n")
    assert ranks[0]["bad_on_rank_1"]["stderr"].startswith(f"error: {d}/bad1.jsonl:5: no column 'text'")
    skipped = [json.loads(line) for line in (one / "skip.jsonl.skipped.jsonl").read_text().splitlines()]
    assert [(s["line"], s["index"]) for s in skipped] == [(8, 7), (11, 10)]  # each skipped row listed once
    rows = [json.loads(line) for line in (one / "single.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [f"k{i}" for i in range(10)] + ["last"]
    directory = [json.loads(line) for line in (one / "directory.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in directory] == list(range(9))
    import pyarrow.parquet as pq

    table = pq.read_table(one / "regression.parquet")
    assert table.column_names == ["id", "label", "score"] and table.num_rows == 7
    manifest = json.loads((one / "shards" / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["shards"]] == [3, 3, 3, 2] and manifest["rows"] == 11
    shard_rows = b"".join((one / "shards" / s["file"]).read_bytes() for s in manifest["shards"])
    assert shard_rows == (one / "single.jsonl").read_bytes()
    assert (one / "empty.jsonl").read_bytes() == b""


if __name__ == "__main__":  # one rank of the torchrun launch above
    import torch.distributed as dist

    dist.init_process_group("gloo")  # every cli() call below shares it, as a driver script may
    models_arg, inputs, outputs = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    results = run_all(models_arg, inputs, outputs, list(COMMANDS))
    (outputs / f"rank{dist.get_rank()}.json").write_text(json.dumps(results))
    dist.destroy_process_group()
