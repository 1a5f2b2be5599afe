"""Fault tolerance, safety and disk: a killed or stopped run resumes to the same result; secrets stay out of every
output; checkpoint rotation keeps the best one.

The reference is one uninterrupted run. The same command is then killed with SIGKILL at a random step after the
first checkpoint, left with a checkpoint cut short while saving, stopped with SIGTERM, stopped with SIGINT, and run
to the end: its weights must equal the reference's bit for bit, and so must its evaluation. The model has dropout
switched on, so the RNG state restored on resume matters, and the run crosses epochs, so the data order does.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

SECRET_ARG = "hf_SECRETfromTheCommandLine0123456789"
SECRET_ENV = "hf_SECRETfromTheEnvironment9876543210"
STEPS = 16  # 32 rows, batch 8: 4 steps per epoch, 4 epochs


@pytest.fixture(scope="module")
def dropout_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with attention dropout 0.1: training consumes random numbers."""
    path = tmp_path_factory.mktemp("models") / "tiny-dropout"
    shutil.copytree(tiny_model_dir, path)
    config = json.loads((path / "config.json").read_text())
    config["attention_dropout"] = 0.1
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


def command(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(ROOT / "run_classification.py"), "--model_name_or_path", str(model_dir),
        "--train_file", str(ROOT / "data/example.jsonl"), "--max_train_samples", "32",
        "--validation_file", str(ROOT / "data/example_test.jsonl"), "--max_eval_samples", "16",
        "--output_dir", str(out), "--do_train", "--do_eval", "--max_seq_length", "64",
        "--num_train_epochs", "4", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
        "--save_strategy", "steps", "--save_steps", "4", "--save_total_limit", "2", "--eval_strategy", "no",
        "--logging_steps", "1", "--disable_tqdm", "true",  # one "{'loss': ...}" line per step on stdout
        "--use_cpu", "true", "--report_to", "none", "--seed", "0", *extra,
    ]


ENV = {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}


class Run:
    """The CLI in the background, its stdout and stderr in files, so a test can watch it and signal it."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.log = log
        self.stdout, self.stderr = log.with_suffix(".out"), log.with_suffix(".err")
        self.proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**os.environ, **ENV, **(env or {})},
                                     stdout=self.stdout.open("w"), stderr=self.stderr.open("w"))

    def steps(self) -> int:
        """Optimizer steps this process has finished (one log line each)."""
        return self.stdout.read_text(errors="replace").count("'loss'")

    def wait_until(self, condition, what: str, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while not condition():
            assert self.proc.poll() is None, f"exited ({self.proc.returncode}) before {what}:\n{self.text()[-3000:]}"
            assert time.time() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def finish(self, timeout: float = 600) -> int:
        return self.proc.wait(timeout)

    def text(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


def complete(checkpoint: Path) -> bool:
    from seqcls.checkpoints import incomplete_reason

    return checkpoint.is_dir() and incomplete_reason(checkpoint) is None


def checkpoint_steps(out: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if complete(p))


@pytest.fixture(scope="module")
def reference(dropout_model_dir, tmp_path_factory):
    """The uninterrupted run, given an access token on the command line and in HF_TOKEN."""
    d = tmp_path_factory.mktemp("reference")
    out = d / "out"
    run = Run(command(dropout_model_dir, out, "--token", SECRET_ARG), d / "run.log",
              env={"HF_TOKEN": SECRET_ENV, "HF_DATASETS_CACHE": str(d / "datasets-cache")})
    assert run.finish() == 0, run.text()[-3000:]
    return {"out": out, "dir": d, "run": run}


def load_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_killed_and_stopped_runs_resume_to_the_same_result(reference, dropout_model_dir, tmp_path):
    import torch

    out = tmp_path / "out"
    args = command(dropout_model_dir, out)

    # 1. SIGKILL at a random step after the first checkpoint
    kill_after = random.randint(5, 8)
    run = Run(args, tmp_path / "1-kill.log")
    run.wait_until(lambda: complete(out / "checkpoint-4"), "the first checkpoint")
    run.wait_until(lambda: run.steps() >= kill_after, f"step {kill_after}")
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    assert not (out / "all_results.json").exists()
    resumable = checkpoint_steps(out)[-1]
    print(f"killed after step {run.steps()} (target {kill_after}); newest complete checkpoint: {resumable}")

    # 2. A kill while saving the next checkpoint: weights half written, no trainer_state.json (written last).
    #    (A kill at step 8 may have left a real one already.)
    cut = out / f"checkpoint-{resumable + 4}"
    if not cut.exists():
        cut.mkdir()
        weights = (out / f"checkpoint-{resumable}/model.safetensors").read_bytes()
        (cut / "model.safetensors").write_bytes(weights[: len(weights) // 2])
        shutil.copy(out / f"checkpoint-{resumable}/config.json", cut / "config.json")

    # 3. The same command resumes (from the newest complete checkpoint); SIGTERM saves a checkpoint and stops
    run = Run(args, tmp_path / "2-term.log")
    run.wait_until(lambda: run.steps() >= 1, "a step after resuming")
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 128 + signal.SIGTERM, run.text()[-3000:]
    text = run.text()
    assert f"resuming from {out}/checkpoint-{resumable}" in text
    assert f"checkpoint {cut} is incomplete (" in text
    assert (out / "incomplete-checkpoints" / cut.name).is_dir()  # moved aside, not deleted
    stopped = re.search(r"stopped by SIGTERM: saved (\S+); run the same command again to resume from it",
                        run.stderr.read_text())
    assert stopped, run.stderr.read_text()[-3000:]
    stop_step = int(stopped.group(1).rsplit("-", 1)[1])
    assert complete(Path(stopped.group(1))) and stop_step > resumable
    assert "Traceback" not in text and not (out / "all_results.json").exists()

    # 4. Resume again; SIGINT (Ctrl-C) does the same, exit status 130
    run = Run(args, tmp_path / "3-int.log")
    run.wait_until(lambda: run.steps() >= 1, "a step after resuming")
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 128 + signal.SIGINT, run.text()[-3000:]
    stopped = re.search(r"stopped by SIGINT: saved (\S+);", run.stderr.read_text())
    assert stopped and complete(Path(stopped.group(1))), run.stderr.read_text()[-3000:]
    assert f"resuming from {out}/checkpoint-{stop_step}" in run.text()

    # 5. Run to the end: the same weights, bit for bit, and the same evaluation as the uninterrupted run
    run = Run(args, tmp_path / "4-end.log")
    assert run.finish() == 0, run.text()[-3000:]
    ref_weights, weights = load_weights(reference["out"]), load_weights(out)
    assert ref_weights.keys() == weights.keys()
    different = [k for k in weights if not torch.equal(weights[k], ref_weights[k])]
    assert not different, f"weights differ from the uninterrupted run: {different[:5]}"
    ref_results = json.loads((reference["out"] / "all_results.json").read_text())
    results = json.loads((out / "all_results.json").read_text())
    # (train_loss and the speed figures cover the steps this process ran, as transformers defines them: not compared)
    for key in ("eval_loss", "eval_accuracy", "eval_macro_f1", "eval_weighted_f1", "epoch"):
        assert results[key] == ref_results[key], key
    assert (out / "eval_report.json").read_text() == (reference["out"] / "eval_report.json").read_text()
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS


def test_access_token_never_written(reference):
    """--token and HF_TOKEN appear in no output file, saved config, log or cache."""
    d = reference["dir"]
    places = [p for p in d.rglob("*") if p.is_file()]
    assert any(p.name == "run_args.json" for p in places) and any(p.name == "training_args.bin" for p in places)
    for path in places:  # the output_dir (model, configs, results, checkpoints), stdout, stderr, datasets cache
        content = path.read_bytes()
        for secret in (SECRET_ARG, SECRET_ENV):
            assert secret.encode() not in content, f"{secret} written to {path}"
    run_args = json.loads((reference["out"] / "run_args.json").read_text())
    assert run_args["token"] == "<redacted>"


def test_rotation_never_deletes_the_best_checkpoint(tiny_model_dir, tmp_path):
    """save_total_limit 2 with the best checkpoint the oldest: the best and the newest stay, the others go.

    With learning rate 0 every evaluation is equal, so the first checkpoint stays the best (ties do not replace it).
    """
    from seqcls.train import main  # in-process: the claim is about the checkpoints a run leaves, not the process

    out = tmp_path / "out"
    main(["--model_name_or_path", str(tiny_model_dir),
          "--train_file", str(ROOT / "data/example.jsonl"), "--max_train_samples", "48",
          "--validation_file", str(ROOT / "data/example_test.jsonl"), "--max_eval_samples", "8",
          "--output_dir", str(out), "--do_train", "--max_seq_length", "32", "--max_steps", "8",
          "--per_device_train_batch_size", "8", "--learning_rate", "0",
          "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
          "--save_total_limit", "2", "--load_best_model_at_end", "true",
          "--use_cpu", "true", "--report_to", "none", "--seed", "0"])
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(out / "checkpoint-2")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-8"]


def test_prediction_killed_midway_leaves_no_output(reference, tmp_path):
    rows = [json.loads(line)["text"] for line in (ROOT / "data/example_test.jsonl").read_text().splitlines()]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in rows * 2000),
                      encoding="utf-8")
    output = tmp_path / "pred.jsonl"
    run = Run(["-m", "seqcls.predict", str(reference["out"]), str(source), "-o", str(output)], tmp_path / "p.log")
    # kill once it has started writing (its finished chunks in pred.jsonl.parts/), or after a while
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "pred.jsonl.parts").is_dir():
        assert run.proc.poll() is None, f"finished before it could be killed:\n{run.text()[-2000:]}"
        time.sleep(0.05)
    time.sleep(0.5)
    assert run.proc.poll() is None, "finished before it could be killed"
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    assert not output.exists()
