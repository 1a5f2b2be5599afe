"""Checkpoints: which one a rerun resumes from, and a clean stop on SIGINT/SIGTERM.

A checkpoint is complete when its `trainer_state.json` is there and reads as JSON: transformers 5.x
`Trainer._save_checkpoint` writes the weights, then optimizer, scheduler, scaler and RNG states, and the trainer
state last (rotation of old checkpoints comes after). A process killed while saving therefore leaves a checkpoint
without that file, or with a truncated one. transformers' own SIGTERM checkpointing (`enable_jit_checkpoint`)
marks a checkpoint in progress with `checkpoint-is-incomplete.txt`; such a checkpoint is incomplete too.

Resuming takes the newest complete checkpoint. Newer incomplete ones are moved aside into
`output_dir/incomplete-checkpoints/` (never deleted: a user may want to look at them), with a warning, so the
resumed run can write its own `checkpoint-N` there later and checkpoint rotation never counts them.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .errors import UsageError

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
INCOMPLETE_DIR = "incomplete-checkpoints"
JIT_SENTINEL = "checkpoint-is-incomplete.txt"  # transformers.trainer_jit_checkpoint writes it while saving


def incomplete_reason(path: str | Path) -> str | None:
    """Why the checkpoint at `path` cannot be resumed from, or None when it is complete."""
    path = Path(path)
    state = path / TRAINER_STATE_NAME
    if (path / JIT_SENTINEL).exists():
        return f"{JIT_SENTINEL} is still there"
    if not state.is_file():
        return f"no {TRAINER_STATE_NAME} (it is written last)"
    try:
        content = json.loads(state.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"{TRAINER_STATE_NAME} is cut short"
    if not isinstance(content, dict) or "global_step" not in content:
        return f"{TRAINER_STATE_NAME} has no global_step"
    return None


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` directories of output_dir, newest (highest N) first."""
    out = Path(output_dir)
    found = [p for p in out.iterdir() if p.is_dir() and CHECKPOINT_RE.match(p.name)] if out.is_dir() else []
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)), reverse=True)


def latest_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete checkpoint in output_dir, or None."""
    for path in checkpoints(output_dir):
        if incomplete_reason(path) is None:
            return str(path)
    return None


def set_aside_incomplete(output_dir: str | Path) -> list[Path]:
    """Move the incomplete checkpoints newer than the newest complete one into output_dir/incomplete-checkpoints/,
    with a warning for each; return where they went."""
    moved = []
    for path in checkpoints(output_dir):
        reason = incomplete_reason(path)
        if reason is None:
            break
        target = _aside_name(path)
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        logger.warning("checkpoint %s is incomplete (%s), probably killed while saving: moved it to %s; resuming "
                       "from the newest complete checkpoint", path, reason, target)
        moved.append(target)
    return moved


def _aside_name(path: Path) -> Path:
    base = path.parent / INCOMPLETE_DIR / path.name
    target, n = base, 1
    while target.exists():
        n += 1
        target = base.with_name(f"{base.name}.{n}")
    return target


def check_resumable(path: str | Path) -> str:
    """An explicit --resume_from_checkpoint must be a complete checkpoint directory."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"resume_from_checkpoint {path} is not a directory; give a checkpoint-N directory")
    reason = incomplete_reason(path)
    if reason is not None:
        older = latest_complete_checkpoint(path.parent) if CHECKPOINT_RE.match(path.name) else None
        hint = f"resume from {older} instead" if older else "give a complete checkpoint-N directory"
        raise UsageError(f"resume_from_checkpoint {path} is incomplete ({reason}); {hint}")
    return str(path)


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint; the CLI exits with 128 + the signal number."""

    def __init__(self, signum: int, checkpoint: str):
        self.signum = signum
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name}: saved {checkpoint}; run the same command again to resume from it")


class GracefulStop(TrainerCallback):
    """On SIGINT or SIGTERM, finish the current optimizer step, save a checkpoint there and stop training.

    The checkpoint is taken at a step boundary like any other, so resuming from it is exact. A second signal
    acts as usual (Ctrl-C twice stops at once). transformers' `enable_jit_checkpoint` is not used: it saves in
    the middle of a step, and it handles SIGTERM only.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.saved_at: int | None = None  # the global step of the checkpoint saved on the signal
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        self._restore()  # a second signal does what it would have done without us
        logger.warning("received %s: saving a checkpoint after this step, then stopping (send it again to stop "
                       "at once)", signal.Signals(signum).name)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _requested(self, args) -> bool:
        flag = self.signum is not None
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # every rank must save and stop together, whichever one got the signal
            import torch

            t = torch.tensor([self.signum or 0], device=args.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            if t.item() and self.signum is None:
                self.signum = int(t.item())
            flag = bool(t.item())
        return flag

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)

    def on_step_end(self, args, state, control, **kwargs):
        if self._requested(args):
            control.should_save = True
            control.should_training_stop = True
            self.saved_at = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        self._restore()

    def raise_if_stopped(self, output_dir: str) -> None:
        """After trainer.train(): raise Interrupted when training stopped on a signal (nothing else is written)."""
        if self.saved_at is not None:
            raise Interrupted(self.signum, os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.saved_at}"))
