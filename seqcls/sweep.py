"""The summary of a sweep: every run's parameters and results in one CSV, a Markdown table sorted by the
best-model metric with mean and standard deviation over seeds, and one plot per swept parameter.

    python scripts/summarize_sweep.py runs/sweep-quickstart      (scripts/sweep.sh runs it at the end)

A run is a directory of the sweep directory holding `params.json` (written by scripts/sweep.sh) or
`run_args.json` (written by training); without params.json the swept parameters are the options whose values
differ between runs. `seed` is what the mean and the standard deviation are taken over.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .cli import DEBUG_FLAG, DEBUG_HELP, run_cli
from .errors import UsageError
from .metrics import BEST_METRIC, greater_is_better
from .outputs import atomic_open
from .redaction import SECRET_OPTIONS
from .report import markdown_table, new_figure, read_json, save_figure

SEED = "seed"
RUNNING_MARKER = ".sweep_running"  # scripts/sweep.sh: present from the start of a run until it exits cleanly
# options that differ between runs without being parameters
NOT_PARAMETERS = {"output_dir", "run_name", "logging_dir", "hub_model_id", *SECRET_OPTIONS}


@dataclass
class Run:
    name: str
    path: Path
    params: dict[str, str]
    status: str  # done, failed, interrupted, not started
    results: dict[str, Any] = field(default_factory=dict)
    run_args: dict[str, Any] = field(default_factory=dict)


def _number(value: str) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def collect_runs(sweep_dir: str | Path) -> list[Run]:
    """Every run of the sweep directory, finished or not, with its parameters and results."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UsageError(f"sweep directory {sweep_dir} does not exist")
    failed = set()
    failed_file = sweep_dir / "failed.txt"
    if failed_file.is_file():
        failed = {line.split("\t")[0] for line in failed_file.read_text(encoding="utf-8").splitlines() if line}
    runs = []
    for path in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        params = read_json(path / "params.json")
        run_args = read_json(path / "run_args.json") or {}
        if params is None and not run_args:
            continue
        results = read_json(path / "all_results.json") or {}
        if results and not (path / RUNNING_MARKER).exists():
            status = "done"
        elif path.name in failed:
            status = "failed"
        elif (path / RUNNING_MARKER).exists():
            status = "interrupted"
        else:
            status = "not finished"
        runs.append(Run(path.name, path, {k: str(v) for k, v in (params or {}).items()}, status, results, run_args))
    if not runs:
        raise UsageError(f"{sweep_dir}: no runs found (no directory with params.json or run_args.json)")
    # runs without params.json: the options whose values differ between runs
    if any(not r.params for r in runs):
        keys = set().union(*(r.params for r in runs))
        with_args = [r for r in runs if r.run_args]
        if not keys and len(with_args) > 1:
            candidates = set().union(*(r.run_args for r in with_args)) - NOT_PARAMETERS
            keys = {k for k in candidates
                    if len({json.dumps(r.run_args.get(k), sort_keys=True) for r in with_args}) > 1}
        for r in runs:
            if not r.params:
                r.params = {k: _text(r.run_args.get(k)) for k in sorted(keys)}
    return runs


def swept_parameters(runs: Sequence[Run]) -> list[str]:
    """The parameters in sweep order (seed last)."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.params if k not in keys]
    return [k for k in keys if k != SEED] + ([SEED] if SEED in keys else [])


def choose_metric(runs: Sequence[Run], metric: str | None = None) -> tuple[str, bool]:
    """(results key, greater is better): the given metric, else the runs' metric_for_best_model, else the best-model
    metric of seqcls.metrics the runs have. The direction: the runs' greater_is_better for their own best-model
    metric, else what seqcls.metrics knows of the metric, else the Trainer's rule (greater unless a loss)."""
    for r in runs:
        name = r.run_args.get("metric_for_best_model")
        if not name:
            continue
        key = name if name.startswith(("eval_", "test_")) else f"eval_{name}"
        if metric is None or metric == key:
            return key, bool(r.run_args.get("greater_is_better", True))
    if metric is None:
        done = [r for r in runs if r.results]
        wanted = [f"eval_{name}" for name, _ in dict.fromkeys(BEST_METRIC.values())] + ["eval_accuracy", "eval_loss"]
        metric = next((k for k in wanted if any(k in r.results for r in done)), "eval_loss")
    greater = greater_is_better(metric)
    return metric, greater if greater is not None else not metric.endswith("loss")


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def _fmt(mean: float, std: float | None) -> str:
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def group_by_setting(runs: Sequence[Run], params: Sequence[str]) -> dict[tuple, list[Run]]:
    """Finished runs grouped by their parameters other than the seed."""
    setting = [p for p in params if p != SEED]
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        if r.status == "done":
            groups.setdefault(tuple(r.params.get(p, "") for p in setting), []).append(r)
    return groups


def companion_metrics(runs: Sequence[Run], metric: str) -> list[str]:
    """The metric, then the same on test, then accuracy (validation and test), where the runs have them."""
    base = metric.split("_", 1)[1] if metric.startswith(("eval_", "test_")) else metric
    wanted = [metric, f"test_{base}", "eval_accuracy", "test_accuracy"]
    present = [k for k in dict.fromkeys(wanted) if any(k in r.results for r in runs if r.status == "done")]
    return present or [metric]


def write_csv(runs: Sequence[Run], params: Sequence[str], path: Path) -> None:
    keys = sorted({k for r in runs for k, v in r.results.items() if isinstance(v, (int, float))})
    with atomic_open(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["run", "status", *params, *keys])
        for r in runs:
            writer.writerow([r.name, r.status, *(r.params.get(p, "") for p in params),
                             *(r.results.get(k, "") for k in keys)])


def _sort_key(value: float | None, greater: bool) -> float:
    if value is None:
        return math.inf
    return -value if greater else value


def markdown(sweep_dir: Path, runs: Sequence[Run], params: Sequence[str], metric: str, greater: bool,
             plots: Sequence[tuple[str, str]]) -> str:
    columns = companion_metrics(runs, metric)
    setting = [p for p in params if p != SEED]
    counts = {s: sum(r.status == s for r in runs) for s in ("done", "failed", "interrupted", "not finished")}
    counted = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines = [f"# Sweep {sweep_dir.name}", "",
             f"{len(runs)} run(s): {counted}. Sorted by `{metric}` ({'higher' if greater else 'lower'} is better), "
             f"best first.", ""]

    groups = group_by_setting(runs, params)
    rows = []
    for key, members in groups.items():
        stats = {}
        for c in columns:
            values = [float(r.results[c]) for r in members if isinstance(r.results.get(c), (int, float))]
            stats[c] = _mean_std(values) if values else None
        rows.append((key, len(members), stats))
    rows.sort(key=lambda row: _sort_key(row[2][metric][0] if row[2].get(metric) else None, greater))
    lines += [f"## By setting: mean ± std over {SEED}s" if SEED in params else "## By setting", ""]
    header = [*setting, "seeds" if SEED in params else "runs", *columns]
    cells = [[*key, str(n)] + [_fmt(*stats[c]) if stats[c] else "" for c in columns] for key, n, stats in rows]
    lines += [*markdown_table(header, cells, len(setting)), ""]

    lines += ["## Runs", ""]
    header = ["run", *params, *columns, "status"]
    ordered = sorted(runs, key=lambda r: (r.status != "done", _sort_key(r.results.get(metric), greater), r.name))
    cells = [[r.name, *(r.params.get(p, "") for p in params),
              *(f"{r.results[c]:.4f}" if isinstance(r.results.get(c), (int, float)) else "" for c in columns),
              r.status] for r in ordered]
    right = [False] * (1 + len(params)) + [True] * len(columns) + [False]
    lines += [*markdown_table(header, cells, right), ""]
    for param, png in plots:
        lines += [f"![{metric} against {param}]({png})", ""]
    return "\n".join(lines)


def plot_parameter(runs: Sequence[Run], params: Sequence[str], param: str, metric: str, greater: bool,
                   path: Path) -> None:
    """The metric against one parameter: each run a dot, mean ± std over seeds as a line with error bars;
    one line per value of the other parameters when there are a few, else the mean over them."""
    done = [r for r in runs if r.status == "done" and isinstance(r.results.get(metric), (int, float))]
    others = [p for p in params if p not in (param, SEED)]
    series: dict[tuple, list[Run]] = {}
    for r in done:
        series.setdefault(tuple(r.params.get(p, "") for p in others), []).append(r)
    if len(series) > 6:
        series = {(): done}
        others = []
    values = sorted({r.params.get(param, "") for r in done}, key=lambda v: (_number(v) is None, _number(v) or 0, v))
    numeric = all(_number(v) is not None for v in values)
    xs = {v: (_number(v) if numeric else i) for i, v in enumerate(values)}
    fig = new_figure(7, 4.5)
    ax = fig.subplots()
    for key, members in sorted(series.items()):
        label = ", ".join(f"{p}={v}" for p, v in zip(others, key)) or None
        by_x: dict[str, list[float]] = {}
        for r in members:
            by_x.setdefault(r.params.get(param, ""), []).append(float(r.results[metric]))
        points = sorted((xs[v], ys) for v, ys in by_x.items())
        stats = [(x, *_mean_std(ys)) for x, ys in points]
        line = ax.errorbar([s[0] for s in stats], [s[1] for s in stats], yerr=[s[2] or 0 for s in stats],
                           marker="o", capsize=4, label=label)
        color = line[0].get_color()
        for x, ys in points:
            ax.scatter([x] * len(ys), ys, s=14, alpha=0.5, color=color)
    if numeric:
        positive = [x for x in xs.values() if x > 0]
        wide = len(positive) > 1 and (max(positive) / min(positive) >= 10 or "learning_rate" in param)
        if len(positive) == len(xs) and wide:
            ax.set_xscale("log")
        ax.set_xticks(list(xs.values()))
        ax.set_xticklabels(values)
        ax.minorticks_off()
    else:
        ax.set_xticks(list(xs.values()))
        ax.set_xticklabels(values, rotation=30 if len(values) > 4 else 0)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    seeds = " (mean ± std over seeds)" if SEED in params and param != SEED else ""
    ax.set_title(f"{metric} against {param}{seeds}; {'higher' if greater else 'lower'} is better", fontsize=10)
    ax.grid(alpha=0.3)
    if others:
        ax.legend(fontsize=8)
    save_figure(fig, path)


def summarize(sweep_dir: str | Path, metric: str | None = None) -> dict[str, Any]:
    """Write sweep_results.csv, sweep_results.md and sweep_<parameter>.png in the sweep directory."""
    sweep_dir = Path(sweep_dir)
    runs = collect_runs(sweep_dir)
    params = swept_parameters(runs)
    metric, greater = choose_metric(runs, metric)
    write_csv(runs, params, sweep_dir / "sweep_results.csv")
    plots: list[tuple[str, str]] = []
    plotted = [p for p in params if p != SEED] or [p for p in params if p == SEED]
    if any(r.status == "done" and metric in r.results for r in runs):
        for param in plotted:
            png = f"sweep_{re.sub(r'[^A-Za-z0-9_.-]', '_', param)}.png"
            try:
                plot_parameter(runs, params, param, metric, greater, sweep_dir / png)
                plots.append((param, png))
            except Exception as e:  # a table without a picture is still worth having
                print(f"warning: plot of {metric} against {param} failed: {type(e).__name__}: {e}", file=sys.stderr)
    text = markdown(sweep_dir, runs, params, metric, greater, plots)
    with atomic_open(sweep_dir / "sweep_results.md") as f:
        f.write(text)
    return {"runs": runs, "params": params, "metric": metric, "greater_is_better": greater, "markdown": text,
            "plots": [sweep_dir / png for _, png in plots]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="summarize_sweep.py", description="Summarize a sweep directory written by scripts/sweep.sh.")
    parser.add_argument("sweep_dir")
    parser.add_argument("--metric", help="Results key to sort by (default: eval_ + the runs' metric_for_best_model).")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    summary = summarize(args.sweep_dir, args.metric)
    print(summary["markdown"])
    sweep_dir = Path(args.sweep_dir)
    written = ["sweep_results.csv", "sweep_results.md", *(p.name for p in summary["plots"])]
    print(f"written in {sweep_dir}: {', '.join(written)}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    """`scripts/summarize_sweep.py SWEEP_DIR` (seqcls.cli: a usage error is one line, exit 2)."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
