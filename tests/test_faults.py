"""Faults without loss (issue 13): a finished run stays finished, one run per output_dir, files complete or absent.

Each test drives the real recipe on the tiny model and states what a user sees. Most run in-process (a few
seconds each). `test_killed_anywhere_reruns_to_the_uninterrupted_result` needs real processes to SIGKILL: it runs
the CLI through tests/fault_inject.py, which kills the process at a named point (a step, inside a checkpoint save,
inside the final model save, inside a results write), reruns the same command after each kill, and compares the
end with one uninterrupted run (the `finished` fixture, shared by every test here).
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from seqcls.checkpoints import IDENTITY_FILE, LOCK_FILE, OutputDirLock
from seqcls.errors import UsageError


def args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(model), "--train_file", str(ROOT / "data/example.jsonl"),
            "--max_train_samples", "32", "--output_dir", str(out), "--do_train", "--max_seq_length", "32",
            "--max_steps", "4", "--per_device_train_batch_size", "8", "--save_strategy", "steps", "--save_steps", "2",
            "--logging_steps", "1", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", *extra]


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory) -> Path:
    from seqcls.train import main

    out = tmp_path_factory.mktemp("finished") / "out"
    main(args(tiny_model_dir, out))
    return out


def test_finished_rerun_is_a_no_op(finished, tiny_model_dir):
    from seqcls.train import main

    before = {p: p.stat().st_mtime_ns for p in finished.rglob("*")}
    results = main(args(tiny_model_dir, finished))
    assert results == json.loads((finished / "all_results.json").read_text())
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("*")} == before  # nothing rewritten
    assert json.loads((finished / IDENTITY_FILE).read_text())["finished"] is True


def test_run_args_record_the_resolved_options_and_the_identity_the_given_ones(finished, tiny_model_dir):
    """run_args.json says how the model was trained (the problem type's best-model metric, packing and the token
    budget as decided); the run identity keeps the options as given, so the same command is recognised on a rerun."""
    from seqcls.arguments import parse_args

    recorded = json.loads((finished / "run_args.json").read_text())
    assert (recorded["metric_for_best_model"], recorded["greater_is_better"]) == ("macro_f1", True)
    assert isinstance(recorded["packing"], bool) and recorded["max_tokens_per_batch"] not in ("auto", None)
    identity = json.loads((finished / IDENTITY_FILE).read_text())["identity"]
    parsed = parse_args(args(tiny_model_dir, finished))[2]
    assert (parsed.packing, parsed.metric_for_best_model) == ("auto", None)
    assert (identity["packing"], identity["max_tokens_per_batch"], identity["metric_for_best_model"]) == \
        (parsed.packing, parsed.max_tokens_per_batch, None)


def test_rerun_with_other_options_is_refused(finished, tiny_model_dir):
    from seqcls.train import main

    with pytest.raises(UsageError, match=r"already holds a finished run, with other options \(learning_rate: "
                                         r"5e-05 -> 0.001\); use another output_dir, or --overwrite_output_dir true"):
        main(args(tiny_model_dir, finished, "--learning_rate", "1e-3"))


def test_kill_before_the_final_record_is_not_finished(finished, tiny_model_dir, tmp_path):
    """A SIGKILL after the final model was saved but before the run was recorded finished: the rerun resumes from
    the last checkpoint and ends with the same results."""
    import shutil

    from seqcls.train import main

    out = tmp_path / "out"
    shutil.copytree(finished, out)
    record = json.loads((out / IDENTITY_FILE).read_text())
    record["finished"] = False
    (out / IDENTITY_FILE).write_text(json.dumps(record))
    for name in ("all_results.json", "train_results.json"):
        (out / name).unlink()
    record["identity"]["output_dir"] = str(out)
    main(args(tiny_model_dir, out))
    assert json.loads((out / IDENTITY_FILE).read_text())["finished"] is True
    assert (out / "train_results.json").exists()


def test_files_get_the_umask_mode(finished):
    """Every file of the run, ours and the Trainer's, checkpoints included (safetensors creates its files 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    files = [p for p in finished.rglob("*") if p.is_file()]
    assert {"model.safetensors", "all_results.json", "trainer_state.json", "run_identity.json", "seqcls.json",
            "README.md", "optimizer.pt"} <= {p.name for p in files}
    assert any(p.parent.name.startswith("checkpoint-") and p.name == "model.safetensors" for p in files)
    wrong = {str(p.relative_to(finished)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) != 0o666 & ~mask}
    assert not wrong, f"not {oct(0o666 & ~mask)}: {wrong}"


def test_second_run_into_a_locked_output_dir_exits_at_once(tmp_path):
    out = tmp_path / "out"
    with OutputDirLock(out):
        owner = json.loads((out / LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(UsageError, match=rf"output_dir {out} is in use by another run \(process {os.getpid()} "
                                             rf"on host {socket.gethostname()}"):
            OutputDirLock(out).acquire()
    assert not out.exists()  # nothing was written: the lock and the directory it created are gone


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": socket.gethostname(), "since": "x"}))
    with caplog.at_level("WARNING", logger="seqcls"):
        with OutputDirLock(out):
            assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "which is gone (killed?): taking the lock over" in caplog.text
    assert not (out / LOCK_FILE).exists()


def test_sigkill_leftover_temporaries_are_removed_by_the_next_writer(tmp_path):
    from seqcls.outputs import write_json

    dead = tmp_path / f".pred.jsonl.{2 ** 22 + 12345}.abc.tmp"
    alive = tmp_path / f".pred.jsonl.{os.getpid()}.abc.tmp"
    dead.write_text("half")
    alive.write_text("being written")
    write_json(tmp_path / "pred.jsonl", {"a": 1})
    assert not dead.exists() and alive.exists()


# --- SIGKILL anywhere, then the same command again -----------------------------------------------------------

SPEED = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}  # wall-clock figures


def start(point: str, argv: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "tests/fault_inject.py"), point, "--", *argv], cwd=ROOT,
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def losses(out: Path) -> list[tuple]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [(h["step"], h["loss"], h["grad_norm"], h["learning_rate"]) for h in history if "loss" in h]


@pytest.mark.slow
def test_killed_anywhere_reruns_to_the_uninterrupted_result(finished, tiny_model_dir, tmp_path):
    """SIGKILL at a random step, inside the save of a checkpoint, of the final model and of the results; after
    each, the same command again. A second run started into the dir meanwhile exits 2 naming the owner. The end
    equals the uninterrupted run: weights bit for bit, train metrics, train_loss and the logged loss history."""
    import torch
    from safetensors.torch import load_file

    from seqcls.train import main

    out = tmp_path / "out"
    argv = args(tiny_model_dir, out)
    step = random.randint(1, 4)  # max_steps 4, a checkpoint every 2 steps
    faults = [f"step:{step}", "checkpoint:4", "final_model", "results:all_results.json"]
    print("faults:", faults)
    for i, point in enumerate(faults):
        log = tmp_path / f"{i}.log"
        code = start(point, argv, log).wait(timeout=600)
        assert code == -signal.SIGKILL, f"{point}: exit {code}\n{log.read_text()[-3000:]}"
        assert not (json.loads((out / IDENTITY_FILE).read_text()).get("finished")), point
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]

    # the last rerun; meanwhile a second run into the same dir is refused at once
    proc = start("none", argv, tmp_path / "end.log")
    deadline = time.time() + 300
    def owner() -> int | None:  # the killed runs left their lock behind: wait for this run's
        try:
            return json.loads((out / LOCK_FILE).read_text())["pid"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    while owner() != proc.pid:
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "end.log").read_text()[-3000:]
        time.sleep(0.05)
    with pytest.raises(UsageError, match=rf"output_dir {out} is in use by another run \(process {proc.pid} "):
        main(argv)
    assert proc.wait(timeout=600) == 0, (tmp_path / "end.log").read_text()[-3000:]

    reference, weights = load_file(finished / "model.safetensors"), load_file(out / "model.safetensors")
    assert reference.keys() == weights.keys()
    assert all(torch.equal(weights[k], reference[k]) for k in weights), "weights differ from the uninterrupted run"
    for name in ("train_results.json", "all_results.json"):
        ours, theirs = (json.loads((d / name).read_text()) for d in (out, finished))
        assert {k: v for k, v in ours.items() if k not in SPEED} == \
            {k: v for k, v in theirs.items() if k not in SPEED}, name
    assert losses(out) == losses(finished)
    assert json.loads((out / IDENTITY_FILE).read_text())["finished"] is True
    assert not [p for p in out.rglob("*.tmp")], "a SIGKILL leftover survived the rerun"


def test_a_run_removes_every_sigkill_leftover_when_it_takes_the_dir(tmp_path):
    """Also of files this run will not write again (an earlier run's predictions) and inside checkpoints."""
    out = tmp_path / "out"
    (out / "checkpoint-2").mkdir(parents=True)
    dead = [out / f".predict_results.jsonl.{2 ** 22 + 12345}.k3j_x.tmp",
            out / "checkpoint-2" / f".run_identity.json.{2 ** 22 + 12345}.abc.tmp"]
    alive = out / f".all_results.json.{os.getpid()}.abc.tmp"
    for p in [*dead, alive]:
        p.write_text("half")
    with OutputDirLock(out):
        assert not any(p.exists() for p in dead) and alive.exists()
