"""Which checkpoint a rerun resumes from: the newest complete one; incomplete ones are moved aside, never deleted."""
import json
import logging

import pytest

from seqcls.checkpoints import (INCOMPLETE_DIR, check_resumable, incomplete_reason, latest_complete_checkpoint,
                                set_aside_incomplete)
from seqcls.errors import UsageError

STATE = json.dumps({"global_step": 4, "log_history": []}, indent=2)


def make(out, step, state=STATE, weights=b"w" * 100, sentinel=False):
    path = out / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(weights)
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    if sentinel:
        (path / "checkpoint-is-incomplete.txt").write_text("in progress")
    return path


def test_completeness(tmp_path):
    assert incomplete_reason(make(tmp_path, 1)) is None
    assert "no trainer_state.json" in incomplete_reason(make(tmp_path, 2, state=None))
    assert "cut short" in incomplete_reason(make(tmp_path, 3, state=STATE[: len(STATE) // 2]))  # killed mid-write
    assert "checkpoint-is-incomplete.txt" in incomplete_reason(make(tmp_path, 4, sentinel=True))  # transformers' JIT
    assert "global_step" in incomplete_reason(make(tmp_path, 5, state="[]"))


def test_newest_complete_checkpoint_by_step_not_by_name(tmp_path):
    make(tmp_path, 9)
    make(tmp_path, 10)  # "checkpoint-10" sorts before "checkpoint-9" as text
    make(tmp_path, 12, state=None)
    (tmp_path / "checkpoint-13.tmp").mkdir()  # not a checkpoint name
    assert latest_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert latest_complete_checkpoint(tmp_path / "absent") is None


def test_incomplete_checkpoints_are_moved_aside_and_logged(tmp_path, caplog):
    make(tmp_path, 4)
    make(tmp_path, 2, state=None)  # older than the newest complete one: left for rotation
    make(tmp_path, 8, state=None)
    make(tmp_path, 12, state="{")
    with caplog.at_level(logging.WARNING, logger="seqcls"):
        moved = set_aside_incomplete(tmp_path)
    assert [p.name for p in moved] == ["checkpoint-12", "checkpoint-8"]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert (tmp_path / INCOMPLETE_DIR / "checkpoint-8" / "model.safetensors").read_bytes() == b"w" * 100
    assert f"checkpoint {tmp_path / 'checkpoint-12'} is incomplete (trainer_state.json is cut short)" in caplog.text
    # killed again while saving the same step: the second one is kept too, under another name
    make(tmp_path, 8, state=None)
    assert set_aside_incomplete(tmp_path)[0].name == "checkpoint-8.2"


def test_explicit_resume_from_an_incomplete_checkpoint_is_an_error(tmp_path):
    make(tmp_path, 4)
    bad = make(tmp_path, 8, state=None)
    with pytest.raises(UsageError, match=rf"resume_from_checkpoint {bad} is incomplete \(no trainer_state.json .*"
                                         rf"resume from {tmp_path / 'checkpoint-4'} instead"):
        check_resumable(bad)
    with pytest.raises(UsageError, match="is not a directory"):
        check_resumable(tmp_path / "checkpoint-99")
    assert check_resumable(tmp_path / "checkpoint-4") == str(tmp_path / "checkpoint-4")
