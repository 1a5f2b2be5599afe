"""scripts/sweep.sh and scripts/summarize_sweep.py: a 2 x 2 sweep on the tiny model, killed midway (SIGKILL to the
sweep and its run, as when a machine goes away) and re-run: the finished run is skipped, the killed one resumes from
its checkpoint, the rest run; a third run skips everything; the summary has 4 rows and mean ± std per setting."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT

from seqcls.sweep import summarize

SWEEP = ROOT / "scripts" / "sweep.sh"
SUMMARIZE = ROOT / "scripts" / "summarize_sweep.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUNS = ["lr1e-3_seed1", "lr1e-3_seed2", "lr3e-3_seed1", "lr3e-3_seed2"]


def sweep_env(sweep_dir: Path, **extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHON": sys.executable, "SWEEP_DIR": str(sweep_dir),
            "LR": "1e-3 3e-3", "SEEDS": "1 2", **extra}


def run_sweep(*args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SWEEP), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sweep(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    # the base config asks to overwrite: the sweep must override that, or a re-run would throw checkpoints away
    config = tmp / "base.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_model_dir}\n"
        f"train_file: {ROOT / 'data/example.jsonl'}\n"
        "validation_split_percentage: 15\nmax_train_samples: 64\nmax_seq_length: 32\n"
        "do_train: true\ndo_eval: true\nuse_cpu: true\nreport_to: none\nlog_level: info\ndisable_tqdm: true\n"
        "num_train_epochs: 1\nper_device_train_batch_size: 8\nlogging_steps: 2\neval_strategy: 'no'\n"
        "save_strategy: steps\nsave_steps: 4\nsave_total_limit: 1\noverwrite_output_dir: true\n",
        encoding="utf-8",
    )
    sweep_dir = tmp / "runs"
    victim = sweep_dir / RUNS[1]

    # 1. start the sweep; SIGKILL it and its run once the second run has saved its first checkpoint (step 4 of 8)
    log = (tmp / "first.log").open("w")
    proc = subprocess.Popen(["bash", str(SWEEP), str(config)], env=sweep_env(sweep_dir, SUMMARIZE="0"), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 400
    try:
        while not (victim / "checkpoint-4" / "trainer_state.json").is_file():
            assert proc.poll() is None, f"the sweep ended before the kill: {(tmp / 'first.log').read_text()}"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()
    at_kill = SimpleNamespace(
        finished=(victim / "all_results.json").exists(),
        marked=(victim / ".sweep_running").exists(),
        later=[r for r in RUNS[2:] if (sweep_dir / r).exists()],
        first_done=(sweep_dir / RUNS[0] / "all_results.json").exists(),
    )

    # 2. the same command again: skips the first run, resumes the killed one, runs the other two
    second = run_sweep(str(config), env=sweep_env(sweep_dir))

    # 3. and once more: nothing left to do
    sizes = {r: (sweep_dir / r / "train.log").stat().st_size for r in RUNS if (sweep_dir / r / "train.log").exists()}
    start = time.monotonic()
    third = run_sweep(str(config), env=sweep_env(sweep_dir, SUMMARIZE="0"))
    return SimpleNamespace(dir=sweep_dir, victim=victim, at_kill=at_kill, second=second, third=third,
                           third_s=time.monotonic() - start, sizes=sizes)


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(sweep):
    assert sweep.at_kill.first_done and not sweep.at_kill.finished and sweep.at_kill.marked
    assert sweep.at_kill.later == []
    out = sweep.second.stdout
    assert sweep.second.returncode == 0, out + sweep.second.stderr
    assert f"{RUNS[0]}: finished before, skipped" in out
    assert f"{RUNS[1]} (interrupted: resuming from its last checkpoint)" in out
    log = (sweep.victim / "train.log").read_text(encoding="utf-8")
    assert "resuming from" in log and "checkpoint-4" in log
    state = json.loads((sweep.victim / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [2, 4, 6, 8]  # steps 2, 4 from before the kill
    for run in RUNS:
        assert (sweep.dir / run / "all_results.json").is_file(), run
        assert not (sweep.dir / run / ".sweep_running").exists(), run
    assert not (sweep.dir / "failed.txt").exists()


@pytest.mark.slow
def test_rerun_skips_finished_runs(sweep):
    assert sweep.third.returncode == 0, sweep.third.stdout + sweep.third.stderr
    assert sweep.third.stdout.count("finished before, skipped") == 4
    assert "0 done, 4 skipped" in sweep.third.stdout
    assert sweep.sizes == {r: (sweep.dir / r / "train.log").stat().st_size for r in RUNS}  # nothing was launched
    assert sweep.third_s < 20


@pytest.mark.slow
def test_summary_has_four_rows_and_mean_std_per_setting(sweep):
    with (sweep.dir / "sweep_results.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run"] for r in rows) == RUNS
    assert {r["status"] for r in rows} == {"done"}
    assert {(r["learning_rate"], r["seed"]) for r in rows} == {(lr, s) for lr in ("1e-3", "3e-3") for s in ("1", "2")}
    assert all(0 <= float(r["eval_macro_f1"]) <= 1 for r in rows)
    md = (sweep.dir / "sweep_results.md").read_text(encoding="utf-8")
    setting_lines = [line for line in md.splitlines() if line.startswith(("| 1e-3 | 2 |", "| 3e-3 | 2 |"))]
    assert len(setting_lines) == 2 and all("±" in line for line in setting_lines)
    means = [float(line.split("|")[3].split("±")[0]) for line in setting_lines]
    assert means == sorted(means, reverse=True)  # best first
    for lr, mean in zip((line.split("|")[1].strip() for line in setting_lines), means):
        values = [float(r["eval_macro_f1"]) for r in rows if r["learning_rate"] == lr]
        assert mean == pytest.approx(sum(values) / 2, abs=1e-4)
    png = sweep.dir / "sweep_learning_rate.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and "![eval_macro_f1 against learning_rate]" in md
    from matplotlib.image import imread

    height, width = imread(png).shape[:2]
    assert 400 <= width <= 3000 and 300 <= height <= 3000


@pytest.mark.slow
def test_every_run_has_its_report(sweep):
    for run in RUNS:
        card = (sweep.dir / run / "README.md").read_text(encoding="utf-8")
        assert "labels:\n- 中立\n- 消极\n- 积极" in card and "eval_macro_f1" not in card.split("---")[1]
        assert "Macro F1 (eval)" in card
        assert (sweep.dir / run / "confusion_matrix.png").read_bytes()[:8] == PNG_MAGIC
        params = json.loads((sweep.dir / run / "params.json").read_text())
        assert set(params) == {"learning_rate", "seed"}


@pytest.mark.slow
def test_failed_runs_are_recorded_and_the_sweep_goes_on(tmp_path):
    """A run that fails (here: a negative learning rate, refused at once) is listed with its log; the next one
    still runs; the exit status says so."""
    env = sweep_env(tmp_path / "runs", LR="-1 -2", SEEDS="7", SUMMARIZE="0")
    proc = run_sweep("--model_name_or_path", "unused", "--train_file", str(ROOT / "data/example.jsonl"),
                     "--do_train", env=env, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = (tmp_path / "runs" / "failed.txt").read_text().splitlines()
    assert [line.split("\t")[:2] for line in lines] == [["lr-1_seed7", "exit 2"], ["lr-2_seed7", "exit 2"]]
    log = (tmp_path / "runs" / "lr-1_seed7" / "train.log").read_text()
    assert "learning_rate must not be negative" in log
    assert "0 done, 0 skipped (finished before), 2 failed" in proc.stdout


def test_grid_names_and_commands(tmp_path):
    sweep_file = tmp_path / "grid.txt"
    sweep_file.write_text("# extra options\nlr_scheduler_type: linear cosine\n\nmodel_name_or_path Qwen/Qwen3-0.6B\n")
    env = sweep_env(tmp_path / "runs", DRY_RUN="1", EPOCHS="2", SWEEP_FILE=str(sweep_file),
                    LAUNCHER="accelerate launch --num_processes 2")
    proc = run_sweep("configs/quickstart.yaml", "--max_train_samples", "10", env=env)
    assert proc.returncode == 0, proc.stderr
    commands = [line for line in proc.stdout.splitlines() if line.startswith("accelerate launch --num_processes 2 ")]
    assert len(commands) == 2 * 1 * 2 * 1 * 2  # LR x EPOCHS x schedules x model x SEEDS
    first = commands[0].split()
    assert first[5:9] == ["configs/quickstart.yaml", "--max_train_samples", "10", "--learning_rate"]
    name = "lr1e-3_ep2_lr_scheduler_type-linear_model_name_or_path-Qwen-Qwen3-0.6B_seed1"
    assert first[-6:] == ["--output_dir", str(tmp_path / "runs" / name), "--run_name", name,
                          "--overwrite_output_dir", "false"]  # last: it wins over the config's true
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_nothing_to_sweep_is_an_error(tmp_path):
    env = {k: v for k, v in sweep_env(tmp_path / "runs").items() if k not in ("LR", "SEEDS")}
    proc = run_sweep("configs/quickstart.yaml", env=env)
    assert proc.returncode == 2 and "nothing to sweep" in proc.stderr


def _fake_run(sweep_dir: Path, name: str, params: dict | None, run_args: dict, results: dict | None) -> None:
    d = sweep_dir / name
    d.mkdir(parents=True)
    if params is not None:
        (d / "params.json").write_text(json.dumps(params))
    (d / "run_args.json").write_text(json.dumps(run_args))
    if results is not None:
        (d / "all_results.json").write_text(json.dumps(results))


def test_summary_statistics_and_parameters_from_run_args(tmp_path):
    """Mean and sample std per setting, sorted by the metric (lower is better for mse); without params.json the
    parameters are the options that differ between runs; an unfinished run is listed, not averaged."""
    base = {"metric_for_best_model": "mse", "greater_is_better": False, "num_train_epochs": 1.0}
    values = {("1e-05", 1): 0.5, ("1e-05", 2): 0.7, ("2e-05", 1): 0.2, ("2e-05", 2): 0.4}
    for (lr, seed), mse in values.items():
        run_args = {**base, "learning_rate": float(lr), "seed": seed, "output_dir": f"x/{lr}-{seed}"}
        _fake_run(tmp_path, f"{lr}-{seed}", None, run_args, {"eval_mse": mse, "eval_loss": mse})
    _fake_run(tmp_path, "2e-05-3", None, {**base, "learning_rate": 2e-5, "seed": 3, "output_dir": "x/y"}, None)
    proc = subprocess.run([sys.executable, str(SUMMARIZE), str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = summarize(tmp_path)
    assert summary["params"] == ["learning_rate", "seed"] and summary["metric"] == "eval_mse"
    md = summary["markdown"]
    assert "| 2e-05 | 2 | 0.3000 ± 0.1414 |" in md and "| 1e-05 | 2 | 0.6000 ± 0.1414 |" in md
    assert md.index("| 2e-05 | 2 |") < md.index("| 1e-05 | 2 |")
    assert "| 2e-05-3 | 2e-05 | 3 |  | not finished |" in md
    rows = list(csv.DictReader((tmp_path / "sweep_results.csv").open()))
    assert len(rows) == 5 and (tmp_path / "sweep_learning_rate.png").read_bytes()[:8] == PNG_MAGIC


def test_metric_direction_comes_from_the_metrics_module(tmp_path):
    """Lower is better for calibration errors and losses, higher for F1, as seqcls.metrics says (no name guessing)."""
    from seqcls.sweep import choose_metric

    for seed, ece in ((1, 0.2), (2, 0.1)):
        _fake_run(tmp_path, f"s{seed}", {"seed": str(seed)}, {"seed": seed}, {"eval_ece": ece, "eval_macro_f1": ece})
    summary = summarize(tmp_path, "eval_ece")
    assert summary["greater_is_better"] is False
    assert summary["markdown"].index("| s2 |") < summary["markdown"].index("| s1 |")  # lower ECE first
    runs = summary["runs"]
    assert choose_metric(runs, "test_nll_before_calibration") == ("test_nll_before_calibration", False)
    assert choose_metric(runs, "eval_macro_f1") == ("eval_macro_f1", True)
    assert choose_metric(runs) == ("eval_macro_f1", True)  # BEST_METRIC's, as the runs have it
    assert choose_metric(runs, "eval_my_loss") == ("eval_my_loss", False)  # unknown: the Trainer's rule
