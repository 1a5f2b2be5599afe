"""Run the training CLI and SIGKILL it at a named point: `python tests/fault_inject.py POINT -- ARGS...`.

Test-only: the recipe carries no fault hooks; this script wraps the library functions that do the saving and
kills its own process (SIGKILL: no handler, no cleanup runs) at the point named, as a power cut or the OOM killer
would. POINT is one of:

  step:N        when optimizer step N begins (steps N-1 and before are done, later ones are not)
  checkpoint:N  while checkpoint-N is being saved: its weights and optimizer are written, its RNG state and
                trainer_state.json (written last, the mark of a complete checkpoint) are not
  final_model   while the final model is being saved: model.safetensors at the top of output_dir is half written
  none          nowhere: the run goes to its end (the same process setup, for a reference)
  results:NAME  while NAME (train_results.json, all_results.json, ...) is being written: the temporary file is
                complete, the rename onto NAME has not happened
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    import transformers

    kind, _, arg = point.partition(":")
    Trainer = transformers.Trainer
    if kind == "none":
        return
    if kind == "step":
        original_step = Trainer.training_step

        def training_step(self, *args, **kwargs):
            if self.state.global_step + 1 == int(arg):
                die()
            return original_step(self, *args, **kwargs)

        Trainer.training_step = training_step
    elif kind == "checkpoint":
        original_rng = Trainer._save_rng_state

        def _save_rng_state(self, output_dir, *args, **kwargs):
            if Path(output_dir).name == f"checkpoint-{arg}":
                die()
            return original_rng(self, output_dir, *args, **kwargs)

        Trainer._save_rng_state = _save_rng_state
    elif kind == "final_model":
        original_save = Trainer.save_model

        def save_model(self, output_dir=None, _internal_call=False):
            result = original_save(self, output_dir, _internal_call)
            if not _internal_call:  # the final save (checkpoints call it with _internal_call=True)
                weights = Path(output_dir or self.args.output_dir) / "model.safetensors"
                data = weights.read_bytes()
                weights.write_bytes(data[: len(data) // 2])
                die()
            return result

        Trainer.save_model = save_model
    elif kind == "results":
        original_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if Path(dst).name == arg:
                die()
            return original_replace(src, dst, *args, **kwargs)

        os.replace = replace
    else:
        raise SystemExit(f"unknown fault point {point!r}")


if __name__ == "__main__":
    point, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: fault_inject.py POINT -- ARGS..."
    install(point)
    from seqcls.train import cli

    sys.exit(cli(argv))
