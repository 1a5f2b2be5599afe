"""Faults without loss (issue 13): a finished run stays finished, one run per output_dir, files complete or absent.

Each test drives the real recipe in-process on the tiny model (a few seconds each) and states what a user sees.
"""
from __future__ import annotations

import json
import os
import socket
import stat
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
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("all_results.json", "trainer_state.json", "run_identity.json", "seqcls.json", "README.md"):
        assert stat.S_IMODE((finished / name).stat().st_mode) == 0o666 & ~mask, name


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
