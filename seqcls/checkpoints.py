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

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from transformers import TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .errors import UsageError

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
INCOMPLETE_DIR = "incomplete-checkpoints"
JIT_SENTINEL = "checkpoint-is-incomplete.txt"  # transformers.trainer_jit_checkpoint writes it while saving
FINISHED_MARKERS = ("all_results.json", "model.safetensors", "adapter_model.safetensors")


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


# --- Run identity: which run an output_dir and its checkpoints belong to -----------------------------------------

IDENTITY_FILE = "run_identity.json"  # in output_dir (finished: true once every output is written) and each checkpoint
# Options that never change an output of the run: where and how it is logged, saved or loaded, the hardware's
# parallelism. Every other resolved option is part of the run's identity (a new option is, until listed here).
NOT_IDENTITY = frozenset({
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "run_name", "project", "report_to",
    "disable_tqdm", "log_level", "log_level_replica", "log_on_each_node", "logging_first_step", "logging_steps",
    "logging_strategy", "logging_nan_inf_filter", "save_strategy", "save_steps", "save_total_limit",
    "save_on_each_node", "save_only_model", "enable_jit_checkpoint", "restore_callback_states_from_checkpoint",
    "push_to_hub", "hub_always_push", "hub_model_id", "hub_private_repo", "hub_revision", "hub_strategy",
    "hub_token", "token", "trackio_bucket_id", "trackio_space_id", "trackio_static_space_id", "cache_dir",
    "overwrite_cache", "preprocessing_num_workers", "dataloader_num_workers", "dataloader_persistent_workers",
    "dataloader_pin_memory", "dataloader_prefetch_factor", "dataloader_multiprocessing_context", "local_rank",
    "ddp_timeout", "ddp_backend", "debug", "skip_memory_metrics", "torch_empty_cache_steps", "ignore_data_skip",
    # how the same step is computed, tested to give the same weights: a resume may switch it
    "embedding_update",
})
# Options that change what evaluation and prediction write but not the trained model: a resume may change them,
# a finished run rerun with another value is not the same run.
NOT_TRAINING = frozenset({
    "do_eval", "do_predict", "test_file", "max_predict_samples", "test_split_name", "per_device_eval_batch_size",
    "eval_accumulation_steps", "eval_do_concat_batches", "eval_use_gather_object", "batch_eval_metrics",
    "metric_name", "id_column", "sort_eval_by_length", "bf16_full_eval", "fp16_full_eval", "prediction_loss_only",
})
DATA_FILES = ("train_file", "validation_file", "test_file")


def file_digest(path: str | Path) -> str:
    """sha256 of a file's content (hashlib reads it in blocks: about 1 s per GB)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def model_digest(name: str) -> str | None:
    """A local model's fingerprint: config.json's content and every weight file's name and size (hashing many GB of
    weights on every start would cost minutes; a changed checkpoint of the same shapes under the same path is not
    seen). None for a Hub id (its name and revision are options already)."""
    import hashlib

    path = Path(name).expanduser()
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.name in ("config.json", "adapter_config.json", "tokenizer.json", "tokenizer_config.json") and f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
        elif f.suffix in (".safetensors", ".bin") and f.is_file():
            h.update(f"{f.name}\0{f.stat().st_size}\0".encode())
    return h.hexdigest()


def run_identity(options: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs the same run: the resolved options (all but NOT_IDENTITY), the content of every data
    file and the model's fingerprint."""
    identity = {k: v for k, v in sorted(options.items()) if k not in NOT_IDENTITY}
    for key in DATA_FILES:
        if options.get(key) and Path(options[key]).is_file():
            identity[f"{key}_sha256"] = file_digest(options[key])
    if options.get("model_name_or_path"):
        identity["model_fingerprint"] = model_digest(options["model_name_or_path"])
    return json.loads(json.dumps(identity, default=str))  # what is compared is what is saved


def fingerprint(identity: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def first_difference(saved: dict[str, Any], current: dict[str, Any], ignore: frozenset = frozenset()) -> str | None:
    """The first option (in name order) whose value differs, as 'key: saved -> current', or None."""
    for key in sorted(set(saved) | set(current)):
        if key in ignore:
            continue
        if saved.get(key) != current.get(key):
            return f"{key}: {_short(saved.get(key))} -> {_short(current.get(key))}"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def read_identity(directory: str | Path) -> dict[str, Any] | None:
    """The identity record in an output_dir or checkpoint ({"identity", "fingerprint", "finished"}), or None when
    there is none (a run from an older seqcls, or killed before training started)."""
    path = Path(directory) / IDENTITY_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # cannot happen through write_json (complete or absent); treated as absent
    return record if isinstance(record, dict) and isinstance(record.get("identity"), dict) else None


def write_identity(directory: str | Path, identity: dict[str, Any], finished: bool = False) -> None:
    from .outputs import write_json

    write_json(Path(directory) / IDENTITY_FILE,
               {"fingerprint": fingerprint(identity), "finished": finished, "identity": identity})


class RecordIdentity(TrainerCallback):
    """Save the run identity into every checkpoint, once the Trainer has written it whole."""

    def __init__(self, identity: dict[str, Any]):
        self.identity = identity

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if args.should_save and path.is_dir():
            give_weights_umask_mode(path)
            write_identity(path, self.identity)


def give_weights_umask_mode(directory: str | Path) -> None:
    """safetensors creates its files with mode 0600 whatever the umask (model.safetensors of the Trainer's
    checkpoints and final save), so a serving account could not read the model; give them the mode an ordinary
    open() gives, as every other file of the run has."""
    from .outputs import current_umask

    mode = 0o666 & ~current_umask()
    for path in Path(directory).glob("*.safetensors"):
        if path.is_file() and not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) != mode:
            os.chmod(path, mode)


def _refuse(out: Path, what: str, difference: str) -> UsageError:
    return UsageError(f"output_dir {out} {what}, with other options ({difference}); use another output_dir, or "
                      "--overwrite_output_dir true to replace it")


@dataclass
class RunPlan:
    """What a training run does with its output_dir: resume (a checkpoint or None) or nothing at all (finished)."""

    identity: dict[str, Any]
    resume: str | None = None
    finished: bool = False  # the same run finished already: nothing to do


def plan_run(training_args, options: dict[str, Any]) -> RunPlan:
    """Resume from the newest complete checkpoint in output_dir, if it belongs to this run; recognise a finished run
    of the same options (nothing to do) and refuse to resume or clobber a run of other options.

    A run is finished only when its identity record says so: that record is rewritten with finished: true after
    every other output, so a run killed while saving its final model or results is resumed (or, without a
    checkpoint, redone), never taken for finished. Under several processes every rank reaches the same answer: only
    the process that saves deletes old checkpoints, and the others wait until it is done.
    """
    identity = run_identity(options)
    plan = RunPlan(identity)
    if training_args.resume_from_checkpoint:
        plan.resume = check_resumable(training_args.resume_from_checkpoint)
        saved = read_identity(plan.resume)
        if saved is not None:
            difference = first_difference(saved["identity"], identity, NOT_TRAINING)
            if difference:
                raise UsageError(f"resume_from_checkpoint {plan.resume} belongs to a run with other options "
                                 f"({difference}); resume with the same options, or drop resume_from_checkpoint")
        return plan
    if not training_args.do_train:
        return plan
    out = Path(training_args.output_dir)
    if training_args.overwrite_output_dir and restart_count() > 0:
        # the launcher restarted this same job (torchrun --max_restarts, SLURM --requeue): the first attempt already
        # replaced the old run, so carry on from this job's own checkpoints instead of wiping them
        plan.resume = latest_complete_checkpoint(out) if out.is_dir() else None
        logger.warning("restart %d of this job: %s", restart_count(),
                       f"resuming from {plan.resume}" if plan.resume else "no checkpoint yet, starting afresh")
        return plan
    if training_args.overwrite_output_dir:
        # every rank enters (a barrier that only some ranks reach would pair with the next one and hang)
        with training_args.main_process_first(local=training_args.save_on_each_node, desc="removing old checkpoints"):
            if training_args.should_save and out.is_dir():
                old = list(out.glob(f"{PREFIX_CHECKPOINT_DIR}-*"))
                for ckpt in old:
                    shutil.rmtree(ckpt, ignore_errors=True)
                if (out / IDENTITY_FILE).exists():
                    (out / IDENTITY_FILE).unlink()  # the old run's outputs are no longer a finished run
                if old:
                    logger.warning("overwrite_output_dir: removed the old checkpoints in %s", out)
        return plan
    if not out.is_dir():
        return plan
    saved = read_identity(out)
    if saved is not None:
        if saved.get("finished"):
            difference = first_difference(saved["identity"], identity)
            if difference:
                raise _refuse(out, "already holds a finished run", difference)
            plan.finished = True
            return plan
        difference = first_difference(saved["identity"], identity, NOT_TRAINING)
        if difference:
            raise _refuse(out, "holds an unfinished run", difference)
    last = latest_complete_checkpoint(out)
    if last is not None:
        checkpoint_identity = read_identity(last)
        if checkpoint_identity is not None:
            difference = first_difference(checkpoint_identity["identity"], identity, NOT_TRAINING)
            if difference:
                raise _refuse(out, f"holds checkpoint {Path(last).name} of another run", difference)
        elif saved is None:
            logger.warning("%s has no %s (saved by an older seqcls): its options cannot be checked against these",
                           last, IDENTITY_FILE)
        logger.info("resuming from %s (use --overwrite_output_dir true to start afresh)", last)
        plan.resume = last
        return plan
    finished = [m for m in FINISHED_MARKERS if (out / m).exists()]
    if finished and saved is None:  # a finished run of an older seqcls, or not ours
        raise UsageError(
            f"output_dir {out} already holds a finished run ({finished[0]}); use another output_dir, "
            "or --overwrite_output_dir true to replace it"
        )
    if saved is not None and finished:
        logger.warning("output_dir %s holds a run of these options killed before it finished (no checkpoint to "
                       "resume from): training it again", out)
    return plan


def start_training(output_dir: str | Path, identity: dict[str, Any]) -> None:
    """Before the first step, on the process that saves: set aside the incomplete checkpoints a kill while saving
    left (the resumed run may save that step again) and record whose checkpoints these are (finished: false until
    `write_identity(..., finished=True)` after every other output)."""
    set_aside_incomplete(output_dir)
    write_identity(output_dir, identity)

def finished_results(output_dir: str | Path) -> dict[str, Any]:
    """The results of a finished run (all_results.json), for a rerun that has nothing to do."""
    path = Path(output_dir) / "all_results.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def restart_count() -> int:
    """How often a launcher has restarted this same job: torchrun's --max_restarts, SLURM's --requeue."""
    counts = (os.environ.get(name, "") for name in ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT"))
    return max((int(c) for c in counts if c.strip().isdigit()), default=0)


# --- One run per output_dir ----------------------------------------------------------------------------------------

LOCK_FILE = ".seqcls.lock"


class OutputDirLock:
    """Held by the saving process for the whole run: `output_dir/.seqcls.lock`, created with O_EXCL (atomic on local
    filesystems and on NFSv3+, Lustre, GPFS), holding the owner's PID, host and start time. A second run exits 2 at
    once naming the owner. A lock whose owner is a dead process on this host (SIGKILL, OOM) is taken over with a
    warning; one from another host cannot be checked and must be removed by hand once that run is gone.

    Written by hand: filelock/fcntl locks vanish with the process, which is what we want, but they are not
    reliable across nodes on NFS and say nothing about who holds them.
    """

    def __init__(self, output_dir: str | Path):
        self.out = Path(output_dir)
        self.path = self.out / LOCK_FILE
        self.created_dir = False
        self.held = False

    def __enter__(self) -> "OutputDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        import socket
        import time

        if not self.out.exists():
            self.out.mkdir(parents=True)
            self.created_dir = True
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # less the umask
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner.get("host") == socket.gethostname() and \
                        isinstance(owner.get("pid"), int) and not _pid_alive(owner["pid"]):
                    logger.warning("output_dir %s was locked by process %d on this host, which is gone (killed?): "
                                   "taking the lock over", self.out, owner["pid"])
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                self.release()
                who = (f"process {owner.get('pid')} on host {owner.get('host')} since {owner.get('since')}"
                       if owner else "another process")
                raise UsageError(f"output_dir {self.out} is in use by another run ({who}; {self.path}); wait for it "
                                 "to end or use another output_dir (if that run is gone, remove the lock file)")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(record + "\n")
            self.held = True
            remove_leftovers(self.out)
            return

    def _owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None  # being written this instant, or not ours: not taken over
        return owner if isinstance(owner, dict) else None

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False
        if self.created_dir:  # the run stopped before writing anything: leave no empty output_dir behind
            with contextlib.suppress(OSError):
                self.out.rmdir()
            self.created_dir = False


def remove_leftovers(output_dir: str | Path) -> list[Path]:
    """Remove the temporary files killed writers left in output_dir and its checkpoints (readers skip them already:
    `outputs.is_temporary`), also those of files this run will not write again. A live writer's are kept."""
    from .outputs import TMP_SUFFIX, is_temporary, remove_stale_temporaries

    out = Path(output_dir)
    removed: list[Path] = []
    for directory in [out, *checkpoints(out)]:
        for tmp in directory.glob(f".*{TMP_SUFFIX}"):
            parts = tmp.name[1:-len(TMP_SUFFIX)].rsplit(".", 2)  # .NAME.PID.RANDOM.tmp (outputs.atomic_open)
            if is_temporary(tmp) and len(parts) == 3:
                removed += remove_stale_temporaries(directory / parts[0])
    if removed:
        logger.info("removed %d file(s) left half-written by a killed run: %s", len(removed),
                    ", ".join(str(p) for p in removed))
    return removed


def _pid_alive(pid: int) -> bool:
    from .outputs import pid_alive

    return pid_alive(pid)


@contextlib.contextmanager
def output_dir_lock(training_args) -> Iterator[None]:
    """The OutputDirLock on the process that saves (rank 0, or each node's first with save_on_each_node); nothing on
    the others, which never write output_dir."""
    if not training_args.should_save:
        yield
        return
    with OutputDirLock(training_args.output_dir):
        yield


def checkpoint_to_resume(training_args, options: dict[str, Any] | None = None) -> str | None:
    """The checkpoint a run resumes from (None: start afresh); see plan_run."""
    return plan_run(training_args, options or {}).resume


# --- The running loss total, so that a resumed run reports what the uninterrupted one does ------------------------

LOSS_TALLY = "LossTally"  # the key in trainer_state.json's stateful_callbacks


def loss_tally(trainer) -> dict[str, Any]:
    """What transformers keeps of the training loss between log lines and only in memory (Trainer._tr_loss, summed
    on the device since the last log line, and _total_loss_scalar, the sum of every logged span): saved with each
    checkpoint, so that the first log line after a resume and train_loss cover the same steps as without the stop."""
    return {"total": trainer._total_loss_scalar, "pending": trainer._tr_loss.item(),
            "last_logged": trainer._globalstep_last_logged}


class RestoreLossTally(TrainerCallback):
    """At the start of a resumed train(): put back the loss tally saved in the checkpoint (the Trainer has just
    zeroed it). transformers offers no other hook between loading the state and the first step."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.tally: dict[str, Any] | None = None  # set by the trainer when it loads a checkpoint's state

    def on_train_begin(self, args, state, control, **kwargs):
        if self.tally is not None:
            t = self.trainer
            t._total_loss_scalar = float(self.tally["total"])
            t._tr_loss.fill_(float(self.tally["pending"]))
            t._globalstep_last_logged = int(self.tally["last_logged"])
