"""The report of a finished run: a confusion matrix, training curves and a model card, from the files in output_dir.

Training writes it at the end of a run (`write_report`); regenerate it at any time without retraining:

    python -m seqcls.report runs/quickstart

Inputs (all in output_dir): `run_info.json` (the command, the resolved config and the data files with their row
counts, recorded by training), `run_args.json`, `config.json`, `all_results.json`, `trainer_state.json`,
`eval_report.json` / `test_report.json`. Outputs: `confusion_matrix.png` (scikit-learn's ConfusionMatrixDisplay),
`reliability_diagram.png`, `training_curves.png`, `README.md` (front matter by huggingface_hub's ModelCardData).
Plots are drawn on Figures with the Agg canvas (no pyplot figure, no display, no global backend change). A plot
that cannot be drawn is a warning, never a failed run. The JSON, figure and Markdown-table helpers here are shared
with the sweep summary (seqcls.sweep).
"""
from __future__ import annotations

import argparse
import dataclasses
import enum
import functools
import json
import logging
import os
import re
import shlex
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .cli import DEBUG_FLAG, DEBUG_HELP, run_cli
from .errors import UsageError
from .labels import MULTI, REGRESSION, SINGLE
from .metrics import too_many_labels
from .outputs import atomic_open, write_json
from .redaction import SECRET_OPTIONS, redact_argv

logger = logging.getLogger(__name__)

RUN_INFO = "run_info.json"
CARD = "README.md"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "training_curves.png"
RELIABILITY_PNG = "reliability_diagram.png"


# how the Hub's model-index names our metrics (type: a metric id; name: what people read)
METRIC_TYPES = {
    "accuracy": ("accuracy", "Accuracy"),
    "macro_f1": ("f1", "Macro F1"),
    "weighted_f1": ("f1", "Weighted F1"),
    "micro_f1": ("f1", "Micro F1"),
    "subset_accuracy": ("accuracy", "Subset accuracy"),
    "mse": ("mse", "MSE"),
    "mae": ("mae", "MAE"),
    "pearson": ("pearsonr", "Pearson r"),
    "spearman": ("spearmanr", "Spearman rho"),
}


# ----------------------------------------------------------------------------------------------------------
# Helpers shared with the sweep summary (seqcls.sweep): JSON files, figures, Markdown tables


def read_json(path: Path) -> Any:
    """The JSON content of a file, or None when it is missing or not valid JSON (a run may not have written it)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot figure, no display, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Path) -> None:
    """Write a figure as PNG under a temporary name, renamed into place."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool] | int = 0) -> list[str]:
    """The lines of a Markdown table; `right`: per column whether it is right-aligned (numbers), or the number of
    left-aligned columns before the right-aligned ones."""
    if isinstance(right, int):
        right = [i >= right for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


# ----------------------------------------------------------------------------------------------------------
# Recording the run (called by training)


def resolved_config(given, run_args: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(config file, {option: value}) for every option the user set, in the file or on the command line (as the
    parser recorded it: `arguments.GivenOptions`), with the values the run actually used. Saved as YAML it
    reproduces the run: `python run_classification.py it.yaml`. Access tokens are left out."""
    if given is None:
        return None, {}
    return given.config_file, {k: v for k, v in run_args.items() if k in given.keys and k not in SECRET_OPTIONS}


def data_summary(raw, sources: dict) -> dict[str, dict[str, Any]]:
    """Per split: the file it came from, the rows in that file, and the rows the run used."""
    summary: dict[str, dict[str, Any]] = {}
    for split in ("train", "validation", "test"):
        if raw is None or split not in raw:
            continue
        src = sources.get(split) if sources else None
        name = getattr(src, "name", None)
        rows_in_file = None
        if src is not None and src.lines is not None:
            rows_in_file = len(src.lines)
        elif name and name.endswith(".parquet") and Path(name).is_file():
            try:
                import pyarrow.parquet as pq

                rows_in_file = pq.ParquetFile(name).metadata.num_rows
            except Exception:  # a count for the card is not worth failing over
                rows_in_file = None
        entry = {"file": name, "rows_in_file": rows_in_file, "rows_used": len(raw[split])}
        if split == "validation" and sources and getattr(sources.get("train"), "name", None) == name:
            entry["held_out_from_train"] = True
        summary[split] = entry
    return summary


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    found = {"seqcls": __version__, "python": sys.version.split()[0]}
    for pkg in ("transformers", "torch", "datasets", "accelerate", "peft"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return found


def record_run(out: str | Path, argv: Sequence[str] | None, raw=None, sources: dict | None = None,
               world_size: int = 1, given=None) -> dict[str, Any]:
    """Write run_info.json: the exact command (tokens redacted), the resolved config (from `given`, the parser's
    `GivenOptions`), data files and row counts."""
    out = Path(out)
    command = list(sys.argv) if argv is None else [_script_name(), *argv]
    command = redact_argv(command)
    run_args = read_json(out / "run_args.json") or {}
    config_file, config = resolved_config(given, run_args)
    info = {
        "command": command,
        "cwd": os.getcwd(),
        "world_size": world_size,
        "config_file": config_file,
        "config": config,
        "data": data_summary(raw, sources or {}),
        "versions": versions(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(out / RUN_INFO, info)
    return info


def _script_name() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return sys.argv[0] if name in ("run_classification.py", "seqcls-train") else "run_classification.py"


def display_command(info: dict[str, Any]) -> str:
    """The command as a user types it, from the working directory the run started in."""
    command = list(info.get("command") or [])
    if not command:
        return ""
    script = command[0]
    if os.path.isabs(script) and info.get("cwd"):
        rel = os.path.relpath(script, info["cwd"])
        script = rel if not rel.startswith("..") else script
    args = shlex.join(command[1:])
    if os.path.basename(script) == "seqcls-train":
        prog = "seqcls-train"
    elif int(info.get("world_size") or 1) > 1:
        prog = f"accelerate launch --num_processes {info['world_size']} {script}"
    else:
        prog = f"python {script}"
    return f"{prog} {args}".strip()


# ----------------------------------------------------------------------------------------------------------
# Fonts: label names are often Chinese; matplotlib's own font (DejaVu Sans) has no CJK glyphs


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    from matplotlib import ft2font

    try:
        return frozenset(ft2font.FT2Font(path).get_charmap())
    except Exception:  # unreadable or unsupported font files: no glyphs
        return frozenset()


@functools.lru_cache(maxsize=256)
def font_for(text: str) -> str | None:
    """Path of an installed font that has a glyph for every character of `text`; None when none has.

    Checks the default font first, then every font matplotlib knows (`fc-list :lang=zh` lists the CJK ones;
    install e.g. fonts-noto-cjk to get Chinese label names drawn)."""
    from matplotlib import font_manager

    chars = {ord(c) for c in text if not c.isspace()}
    default = font_manager.findfont(font_manager.FontProperties(), fallback_to_default=True)
    candidates = [default] + sorted({f.fname for f in font_manager.fontManager.ttflist},
                                    key=lambda p: (not re.search(r"cjk|noto|wqy|hei|song|ming|gothic", p, re.I), p))
    for path in dict.fromkeys(candidates):
        if "lastresort" in os.path.basename(path).lower():
            continue  # matplotlib >= 3.10 ships LastResort: every code point maps to a placeholder box
        if chars <= _charmap(path):
            return path
    return None


@dataclasses.dataclass
class TickLabels:
    """What to write on the axes for each label: its name in a font that has its glyphs, or its id where no
    installed font has them (per label: one name without glyphs does not turn the others into ids)."""

    texts: list[str]
    fonts: list[Any]  # a FontProperties per label, or None for the default font
    by_id: list[bool]

    @classmethod
    def for_names(cls, names: Sequence[str]) -> "TickLabels":
        from matplotlib.font_manager import FontProperties

        texts, fonts, by_id = [], [], []
        for i, name in enumerate(names):
            path = font_for(name)
            texts.append(name if path is not None else str(i))
            fonts.append(FontProperties(fname=path) if path is not None else None)
            by_id.append(path is None)
        return cls(texts, fonts, by_id)

    @property
    def any_by_id(self) -> bool:
        return any(self.by_id)

    def apply(self, tick_labels) -> None:
        """Give each drawn tick label (matplotlib Text) its label's font."""
        for text, font in zip(tick_labels, self.fonts):
            if font is not None:
                text.set_fontproperties(font)


def labels_shown_by_id(names: Sequence[str]) -> list[int]:
    """The ids of the labels the plots show by id (no installed font has their glyphs)."""
    return [i for i, by_id in enumerate(TickLabels.for_names(names).by_id) if by_id]


# ----------------------------------------------------------------------------------------------------------
# Plots


def plot_confusion_matrix(report: dict[str, Any], path: str | Path, title: str = "") -> bool:
    """Draw the confusion matrix of a classification report with scikit-learn's ConfusionMatrixDisplay (counts and
    row-normalised; for multi-label one 2 x 2 matrix per label). Returns True when a label id stands in for a name
    (no installed font has its glyphs)."""
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    names = list(report["labels"])
    ticks = TickLabels.for_names(names)
    if report.get("problem_type") == MULTI:
        fig = _multi_label_figure(report, names, ticks, title)
    else:
        matrix = np.asarray(report["confusion_matrix"], dtype=np.int64)
        n = len(names)
        side = max(4.0, 0.45 * n + 2.5)
        fig = new_figure(2 * side + 1, side + (0.6 if ticks.any_by_id else 0.3))
        axes = fig.subplots(1, 2)
        totals = matrix.sum(axis=1, keepdims=True)
        normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
        rotation = 45 if n > 4 else 0
        for ax, values, what, fmt in ((axes[0], matrix, "counts", "d"),
                                      (axes[1], normalised, "row-normalised (recall)", ".2f")):
            ConfusionMatrixDisplay(values, display_labels=ticks.texts).plot(
                ax=ax, cmap="Blues", include_values=n <= 30, values_format=fmt, xticks_rotation=rotation,
                im_kw={"vmin": 0, "vmax": values.max() or 1}, text_kw={"fontsize": 9})
            ax.set_title(what)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            if rotation:
                for text in ax.get_xticklabels():
                    text.set_horizontalalignment("right")
            ticks.apply(ax.get_xticklabels())
            ticks.apply(ax.get_yticklabels())
        fig.suptitle(title)
    if ticks.any_by_id:
        # supxlabel: constrained layout makes room for it (fig.text would overlap the axis labels)
        fig.supxlabel("label ids stand in for the names no installed font can draw: see README.md", fontsize=8)
    save_figure(fig, Path(path))
    return ticks.any_by_id


def _multi_label_figure(report: dict[str, Any], names: list[str], ticks: TickLabels, title: str):
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    per_label = report["confusion_matrix_per_label"]
    n = len(names)
    cols = min(n, 6)
    rows = -(-n // cols)
    fig = new_figure(2.1 * cols + 0.5, 2.1 * rows + 0.8)
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    for ax, name, text, font in zip(axes, names, ticks.texts, ticks.fonts):
        m = np.asarray(per_label[name], dtype=np.int64)  # [[tn, fp], [fn, tp]]
        totals = m.sum(axis=1, keepdims=True)
        norm = np.divide(m, totals, out=np.zeros(m.shape, dtype=float), where=totals > 0)
        display = ConfusionMatrixDisplay(norm, display_labels=["no", "yes"]).plot(
            ax=ax, cmap="Blues", colorbar=False, im_kw={"vmin": 0, "vmax": 1}, text_kw={"fontsize": 8})
        for (i, j), cell in np.ndenumerate(display.text_):
            cell.set_text(f"{m[i, j]}\n{norm[i, j]:.2f}")  # the count and the row share in each cell
        ax.set_title(text, fontproperties=font, fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{title}\nper label: rows true no/yes, columns predicted no/yes; count and row share")
    return fig


def plot_reliability_diagram(record: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Confidence against accuracy per bin (the bins of ECE), with the count of each bin below; before and after
    calibration side by side when the run fitted one (`calibration.reliability` gives the record)."""
    panels = [("before calibration", record["before_calibration"]), ("after calibration (the saved model)",
                                                                      record["model"])] \
        if record.get("before_calibration") is not None else [("", record["model"])]
    multi = record["over"].startswith("every (row, label)")
    fig = new_figure(max(7.0, 5.0 * len(panels) + 0.5), 6.0)
    axes = fig.subplots(2, len(panels), squeeze=False, sharex=True, height_ratios=[3, 1])
    width = 1 / record["bins"]
    for col, (name, bins) in enumerate(panels):
        top, bottom = axes[0, col], axes[1, col]
        centres = [(b["low"] + b["high"]) / 2 for b in bins]
        accuracy = [b["accuracy"] for b in bins]
        confidence = [b["confidence"] for b in bins]
        counts = [b["count"] for b in bins]
        total = sum(counts) or 1
        ece = sum(n / total * abs(a - c) for n, a, c in zip(counts, accuracy, confidence))
        top.bar(centres, accuracy, width=width, color="tab:blue", edgecolor="white", label="accuracy in the bin"
                if not multi else "share of pairs where the label is true")
        top.bar(centres, [c - a for a, c in zip(accuracy, confidence)], bottom=accuracy, width=width, fill=False,
                edgecolor="tab:red", hatch="//", linewidth=0.8, label="gap to the mean confidence")
        top.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="perfectly calibrated")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("observed frequency" if multi else "accuracy")
        top.set_title(f"{name + ': ' if name else ''}ECE {ece:.4f} ({record['bins']} bins)", fontsize=10)
        top.legend(fontsize=7, loc="upper left")
        bottom.bar(centres, counts, width=width, color="tab:gray", edgecolor="white")
        for x, n in zip(centres, counts):
            bottom.text(x, n, str(n), ha="center", va="bottom", fontsize=6, rotation=90 if n >= 1000 else 0)
        bottom.set_ylim(0, max(counts, default=1) * 1.35)
        bottom.set_ylabel("pairs" if multi else "rows")
        bottom.set_xlabel("predicted probability of the label" if multi else "confidence (top-label probability)")
    over = textwrap.fill(f"over {record['over']}", 90)
    fig.suptitle(f"{title}\n{over}" if title else over, fontsize=10)
    save_figure(fig, Path(path))


def plot_training_curves(state: dict[str, Any], path: str | Path, metric: str | None = None,
                         final: dict[str, Any] | None = None) -> None:
    """Train loss (and eval loss) and the eval metric against the step, from trainer_state.json's log_history.
    Without evaluation during training, the final evaluation is drawn as one point at the last step."""
    history = state.get("log_history") or []
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    eval_loss = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    key = f"eval_{metric}" if metric and not metric.startswith("eval_") else metric
    evals = [(h["step"], h[key]) for h in history if key and key in h and "step" in h]
    fig = new_figure(11, 4)
    left, right = fig.subplots(1, 2, sharex=True)  # one step axis: a single evaluation sits where it belongs
    if train:
        left.plot(*zip(*train), label="train loss", color="tab:blue")
    if eval_loss:
        left.plot(*zip(*eval_loss), "o-", label="eval loss", color="tab:orange")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.set_title("loss")
    if train or eval_loss:
        left.legend()
    else:
        left.text(0.5, 0.5, "no loss logged (logging_steps larger than the run?)", ha="center", va="center",
                  transform=left.transAxes)
    right.set_xlabel("step")
    right.set_ylabel(key or "metric")
    right.set_title(key or "eval metric")
    if evals:
        right.plot(*zip(*evals), "o-", color="tab:green", label=key)
        best = state.get("best_global_step")
        if best and any(s == best for s, _ in evals):
            value = dict(evals)[best]
            right.plot([best], [value], "*", markersize=14, color="tab:red", label=f"best (step {best})")
        right.legend()
    elif final and key in final:
        step = state.get("global_step") or (train[-1][0] if train else 0)
        right.plot([step], [final[key]], "s", color="tab:green", label=f"final {key} = {final[key]:.4f}")
        right.legend()
        right.text(0.5, 0.2, "no evaluation during training (eval_strategy no)", ha="center",
                   transform=right.transAxes, fontsize=8)
    else:
        right.text(0.5, 0.5, "no evaluation logged", ha="center", va="center", transform=right.transAxes)
    save_figure(fig, Path(path))


# ----------------------------------------------------------------------------------------------------------
# The model card


def _hub_id(name: str | None) -> str | None:
    """`name` when it is a Hub model id (owner/name, not a local directory), else None."""
    if not name or Path(name).exists() or os.path.isabs(name):
        return None
    return name if re.fullmatch(r"[\w.-]+/[\w.-]+", name) else None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, allow_unicode=True, sort_keys=False, default_flow_style=False, width=1000)


def fallback_config(run_args: dict[str, Any]) -> dict[str, Any]:
    """Without run_info.json (a run from an older seqcls): the options that differ from their defaults."""
    from .arguments import DATACLASSES

    derived = {"accelerator_config", "activation_checkpointing", "gradient_checkpointing", "debug",
               "dataloader_pin_memory", "metric_for_best_model", "greater_is_better", "report_to", *SECRET_OPTIONS}
    config: dict[str, Any] = {}
    for cls in DATACLASSES:
        for f in dataclasses.fields(cls):
            if not f.init or f.name not in run_args or f.name in derived:
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                config[f.name] = run_args[f.name]
                continue
            if isinstance(default, enum.Enum):
                default = default.value
            if json.dumps(default, default=str) != json.dumps(run_args[f.name], default=str):
                config[f.name] = run_args[f.name]
    return config


def model_card(out: Path, by_id: bool = False, plots: Sequence[str] = ()) -> str:
    """The README.md of a trained model directory: Hugging Face front matter, then results, data, use and
    how to reproduce the run."""
    info = read_json(out / RUN_INFO) or {}
    run_args = read_json(out / "run_args.json") or {}
    config_json = read_json(out / "config.json") or {}
    results = read_json(out / "all_results.json") or {}
    settings = _settings(out, config_json)
    problem_type = settings.label_space.problem_type if settings else (config_json.get("problem_type") or SINGLE)
    if problem_type == REGRESSION:
        names: list[str] = []
    else:
        names = list(settings.label_space.names) if settings else \
            [config_json.get("id2label", {})[k] for k in sorted(config_json.get("id2label", {}), key=int)]
    base = run_args.get("model_name_or_path")
    hub_base = _hub_id(base)
    is_lora = (out / "adapter_config.json").is_file()
    data = info.get("data") or {}
    name = run_args.get("run_name") or out.name
    if name == run_args.get("output_dir"):
        name = out.name

    # --- front matter (huggingface_hub's ModelCardData: the Hub's metadata names and model-index) -----------
    from huggingface_hub import EvalResult, ModelCardData

    eval_results = []
    for prefix, split in (("eval", "validation"), ("test", "test")):
        source = (data.get(split) or {}).get("file") or run_args.get(f"{split}_file") or run_args.get("train_file")
        for key, (mtype, mname) in METRIC_TYPES.items():
            value = results.get(f"{prefix}_{key}")
            if isinstance(value, (int, float)):
                eval_results.append(EvalResult(
                    task_type="text-classification", task_name="Text Classification",
                    dataset_type=_dataset_type(source), dataset_name=Path(str(source)).name if source else split,
                    dataset_split=split, metric_type=mtype, metric_value=round(float(value), 4),
                    metric_name=f"{mname} ({prefix})"))
    metric_names = [k for k in METRIC_TYPES if any(f"{p}_{k}" in results for p in ("eval", "test"))]
    card_data = ModelCardData(
        base_model=hub_base, library_name="peft" if is_lora else "transformers", pipeline_tag="text-classification",
        tags=["seqcls", "text-classification", problem_type.replace("_", "-"), "generated_from_trainer"]
        + (["lora"] if is_lora else []),
        labels=names or None, metrics=metric_names or None,
        model_name=name if eval_results else None, eval_results=eval_results or None)
    front = card_data.to_yaml(original_order=["base_model", "library_name", "pipeline_tag", "tags", "labels",
                                              "metrics", "model-index"])

    lines = ["---", front, "---", "", f"# {name}", ""]
    kind = {SINGLE: f"single-label classifier over {len(names)} labels",
            MULTI: f"multi-label classifier over {len(names)} labels",
            REGRESSION: "regression model (one score)"}[problem_type]
    base_text = f"[`{hub_base}`](https://huggingface.co/{hub_base})" if hub_base else f"`{base}` (a local directory)"
    lines += [f"A {kind}, fine-tuned from {base_text}"
              f"{' with LoRA' if is_lora else ''} with seqcls "
              "(`AutoModelForSequenceClassification`, head on the last token).", ""]

    # --- labels and results -----------------------------------------------------------------------------
    if names:
        lines += ["## Labels", "", *markdown_table(["id", "label"], list(enumerate(names)), [True, False]), ""]
    lines += ["## Results", ""]
    shown = [(p, k) for p in ("eval", "test") for k in METRIC_TYPES if f"{p}_{k}" in results]
    if shown:
        split_name = {"eval": "validation", "test": "test"}
        rows = [(split_name[p], k, _fmt(results[f"{p}_{k}"])) for p, k in shown]
        rows += [(split_name[p], "rows", results[f"{p}_samples"]) for p in ("eval", "test")
                 if f"{p}_samples" in results]
        lines += [*markdown_table(["split", "metric", "value"], rows, 2), ""]
    else:
        lines += ["No evaluation results in all_results.json.", ""]
    for prefix, split in (("eval_", "validation"), ("test_", "test")):
        warning = too_many_labels(results, prefix)
        if warning:
            lines += [f"**Warning** ({split}): {warning}.", ""]
    best = run_args.get("metric_for_best_model") if run_args.get("load_best_model_at_end") else None
    if best:
        lines += [f"Best-model metric: `{best}` ({'higher' if run_args.get('greater_is_better', True) else 'lower'} "
                  "is better).", ""]
    report_name = next((r for r in ("test_report.json", "eval_report.json") if (out / r).is_file()), None)
    report = read_json(out / report_name) if report_name else None
    if report and report.get("per_class"):
        per_class = [(label, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1-score']:.4f}",
                      int(row["support"])) for label in names if (row := report["per_class"].get(label))]
        lines += [f"Per class ({'test' if report_name.startswith('test') else 'validation'}):", "",
                  *markdown_table(["label", "precision", "recall", "F1", "support"], per_class, 1), ""]
    if CONFUSION_PNG in plots:
        lines += [f"![confusion matrix]({CONFUSION_PNG})", ""]
    if CURVES_PNG in plots:
        lines += [f"![training curves]({CURVES_PNG})", ""]
    shown_by_id = labels_shown_by_id(names) if by_id and names else []
    if shown_by_id:
        mapping = ", ".join(f"{i} = {names[i]}" for i in shown_by_id)
        lines += [f"In the plots, label ids stand in for the names no installed font has the glyphs of ({mapping}; "
                  "install a font that has them, e.g. fonts-noto-cjk, and run `python -m seqcls.report OUTPUT_DIR`).",
                  ""]
    if problem_type != REGRESSION:
        lines += calibration_section(results, settings.calibration if settings else None, problem_type,
                                     RELIABILITY_PNG in plots, report_name)

    # --- use --------------------------------------------------------------------------------------------
    if settings is not None:
        lines += usage_section(settings, run_args.get("output_dir") or out.name, is_lora)
    # --- data -------------------------------------------------------------------------------------------
    if data:
        rows = [(split + (" (held out of train)" if entry.get("held_out_from_train") else ""), f"`{entry.get('file')}`",
                 "?" if entry.get("rows_in_file") is None else entry["rows_in_file"], entry.get("rows_used"))
                for split, entry in data.items()]
        lines += ["## Data", "", *markdown_table(["split", "file", "rows in file", "rows used"], rows, 2), ""]

    # --- training and reproduction ----------------------------------------------------------------------
    lines += ["## Training", ""]
    facts = [("train rows", results.get("train_samples")), ("epochs", results.get("epoch")),
             ("train loss", results.get("train_loss")), ("train runtime (s)", results.get("train_runtime")),
             ("processes", results.get("world_size"))]
    lines += [f"- {k}: {_fmt(v)}" for k, v in facts if v is not None]
    if info.get("versions"):
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    lines += ["", "## Reproduce", ""]
    command = display_command(info)
    if command:
        lines += ["The exact command (run from the directory it was started in):", "", "```bash", command, "```", ""]
    else:
        lines += ["The command was not recorded (no run_info.json).", ""]
    config = info.get("config") if info.get("config") else fallback_config(run_args)
    if config:
        where = f" (from `{info['config_file']}` and the command line)" if info.get("config_file") else ""
        lines += [f"The resolved config{where}: save it as `config.yaml` and run "
                  "`python run_classification.py config.yaml`. Every argument the run used is in `run_args.json`.",
                  "", "```yaml", _yaml(config).rstrip(), "```", ""]
    return "\n".join(lines)


def _settings(out: Path, config_json: dict[str, Any]):
    """The run's settings (seqcls.model_dir), or None where they cannot be read (the card still gets written)."""
    from .model_dir import read_settings

    try:
        return read_settings(out)
    except UsageError as e:
        logger.warning("report: %s", e)
        return None


def vllm_command(model_dir: str, settings) -> str:
    """The command that serves a run directory with vLLM's pooling runner, as trained (see README "Serving")."""
    length = f" --max-model-len {settings.max_seq_length}" if settings.max_seq_length else ""
    return f"python -m vllm.entrypoints.openai.api_server --model {model_dir} --runner pooling{length}"


def usage_section(settings, model_dir: str, is_lora: bool) -> list[str]:
    """The card's "Use": what to call, and what to pass, so that each consumer gives the run's own predictions."""
    space = settings.label_space
    cols = settings.columns
    lines = ["## Use", "", "With seqcls (applies everything below by itself):", "", "```bash",
             f"seqcls-predict {model_dir} texts.jsonl -o predictions.jsonl", "```", "", "```python",
             "from seqcls import Classifier", "", f'clf = Classifier.from_pretrained("{model_dir}")',
             "print(clf.predict([" + ('"...", "..."], ["...", "..."]))' if cols.pair else '"..."]))'), "```", ""]
    target = model_dir
    if is_lora:
        lines += ["This directory holds a LoRA adapter: for `pipeline` and vLLM merge it first "
                  f"(`seqcls-merge {model_dir} {model_dir}-merged`) and use the merged directory.", ""]
        target = f"{model_dir}-merged"
    function = {SINGLE: "", MULTI: ', function_to_apply="sigmoid"', REGRESSION: ', function_to_apply="none"'}
    text = '{"text": "...", "text_pair": "..."}' if cols.pair else '"..."'
    lines += ["With transformers:", "", "```python", "from transformers import pipeline", "",
              f'classifier = pipeline("text-classification", model="{target}", top_k=None'
              f'{function[space.problem_type]})', f"print(classifier([{text}], truncation=True))", "```", ""]
    notes = [f"`truncation=True`: the saved tokenizer cuts texts at the trained {settings.max_seq_length} tokens "
             f"(its `model_max_length`) on the {settings.truncation_side}, as in training."
             if settings.max_seq_length else "`truncation=True` cuts texts at the tokenizer's limit."]
    if settings.pooling_token:
        notes.append(f"The saved tokenizer appends the pooling token `{settings.pooling_token}` to every text by "
                     "itself (after truncation); send the plain text.")
    if len(cols.text) > 1:
        joined = f" + {json.dumps(cols.delimiter)} + ".join(cols.text)
        notes.append(f"The model was trained on the columns {', '.join(f'`{c}`' for c in cols.text)} joined: send "
                     f"`{joined}` as the text (seqcls joins them itself).")
    if cols.pair and not cols.prompt.active:
        notes.append(f"Sentence pairs: the second text (`{cols.pair}` in training) goes in `text_pair`.")
    if cols.prompt.active:
        p = cols.prompt
        how = (f"the prompt template {json.dumps(p.template, ensure_ascii=False)}" if p.template else "")
        if p.use_chat_template:
            how += (" inside " if how else "") + "the tokenizer's chat template (the text as the user turn, with the " \
                   "generation prompt" + (f", system prompt {json.dumps(p.system_prompt, ensure_ascii=False)}"
                                          if p.system_prompt is not None else "") + ")"
        notes.append(f"Prompt: every text was wrapped in {how} (`seqcls.json`: prompt_template, use_chat_template, "
                     "system_prompt). `pipeline` and vLLM cannot apply it: send the filled template (for the chat "
                     "template, `tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)`"
                     "), with {text}" + (" and {text_pair}" if cols.pair else "") + " replaced by the text. A text "
                     "too long for the trained length must be cut inside the template before filling it (seqcls cuts "
                     "only the text); `truncation=True` would cut the template's end instead.")
    if space.problem_type == MULTI:
        if settings.thresholds:
            table = ", ".join(f"{n} {t:g}" for n, t in zip(space.names, settings.thresholds))
            notes.append(f"Multi-label: a label applies when its sigmoid probability is at least its threshold, tuned "
                         f"on validation data and saved in `seqcls.json` (`thresholds`): {table}. `pipeline` and "
                         "vLLM return the probabilities; apply these thresholds to them (seqcls does).")
        else:
            notes.append("Multi-label: a label applies when its sigmoid probability is at least 0.5.")
    if space.problem_type == REGRESSION:
        notes.append("Regression: the one output is the predicted value (`function_to_apply=\"none\"`).")
    if space.problem_type != REGRESSION and settings.calibration:
        notes.append("The probabilities are calibrated in the weights themselves (see Calibration): every consumer "
                     "gets them with nothing to apply.")
    lines += [f"- {n}" for n in notes if n] + [""]
    request = {"model": target, "input": ["..."]}
    if settings.max_seq_length:
        request["truncate_prompt_tokens"] = settings.max_seq_length
    if settings.truncation_side == "left":
        request["truncation_side"] = "left"  # vLLM ignores the saved side (and on the right must be left unset)
    lines += ["With vLLM (pooling runner, `POST /classify`; see the seqcls README, \"Serving\"):", "", "```bash",
              vllm_command(target, settings),
              f"curl -s 127.0.0.1:8000/classify -H 'Content-Type: application/json' -d "
              f"'{json.dumps(request, ensure_ascii=False)}'", "```", ""]
    if space.problem_type == REGRESSION or cols.pair:
        lines += ["vLLM's classify endpoint takes single texts and applies softmax or sigmoid: "
                  + ("this pair model needs seqcls or `pipeline`." if cols.pair else
                     "for this regression model use seqcls or `pipeline`."), ""]
    return lines


def calibration_section(results: dict[str, Any], record: dict | None, problem_type: str, diagram: bool,
                        report_name: str | None) -> list[str]:
    """The card's "Calibration": how the probabilities were calibrated, ECE/Brier/NLL per split (before -> after
    when this run calibrated), and the reliability diagram."""
    lines = ["## Calibration", "", calibration_note(record), ""]
    rows = []
    for prefix, split in (("eval", "validation"), ("test", "test")):
        if f"{prefix}_ece" not in results:
            continue
        cells = []
        for key in ("ece", "brier", "nll"):
            after, before = results[f"{prefix}_{key}"], results.get(f"{prefix}_{key}_before_calibration")
            cells.append(f"{before:.4f} → {after:.4f}" if before is not None else f"{after:.4f}")
        fitted = prefix == "eval" and f"{prefix}_ece_before_calibration" in results
        rows.append((split + (" (the fit rows)" if fitted else ""), *cells))
    if rows:
        before = any(f"{p}_ece_before_calibration" in results for p in ("eval", "test"))
        over = ("every (row, label) pair" if problem_type == MULTI else "the top-label confidence of every row")
        lines += [f"ECE (15 equal-width bins over {over}), Brier score and NLL"
                  + (", before → after calibration" if before else "") + " (lower is better):", "",
                  *markdown_table(["split", "ECE", "Brier", "NLL"], rows, 1), ""]
    if diagram:
        split = "test" if report_name and report_name.startswith("test") else "validation"
        lines += [f"![reliability diagram]({RELIABILITY_PNG})", "",
                  f"Reliability diagram ({split}): in each bin, the mean predicted probability against how often it "
                  "was right" + (" (the share of (row, label) pairs where the label is true)" if problem_type == MULTI
                                 else "") + "; bars below the diagonal are over-confident. Counts below each bin.",
                  ""]
    return lines


def calibration_note(record: dict | None) -> str:
    """The card's statement of whether and how the probabilities are calibrated (seqcls.json `calibration`)."""
    if not record:
        return ("Probabilities are not calibrated (the model's raw softmax/sigmoid; fine-tuned classifiers are "
                "often over-confident): recalibrate on labelled data with `--calibration temperature`.")
    temps = record["temperatures"]
    shown = ", ".join(f"{t:g}" for t in temps[:8]) + (", ..." if len(temps) > 8 else "")
    names = {"ece": "ECE", "brier": "Brier", "nll": "NLL"}
    fig = lambda m: ", ".join(f"{names.get(k, k)} {v:.4f}" for k, v in m.items())  # noqa: E731
    return (f"Probabilities are calibrated by temperature scaling (T = {shown}), fitted on {record['rows']} rows of "
            f"{record['fitted_on']} and folded into the head's weights, so every consumer gets them as they are. "
            f"On those rows: before {fig(record['before'])}; after {fig(record['after'])} "
            "(ECE: 15 equal-width bins; labels unchanged).")


def _dataset_type(source: Any) -> str:
    if not source:
        return "unknown"
    suffix = Path(str(source)).suffix.lower()
    return {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}.get(suffix,
                                                                                                        str(source))


# ----------------------------------------------------------------------------------------------------------
# Putting it together


def _attempt(out: Path, problems: list[str], what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # a report must never fail a run: say what went wrong and go on
        problems.append(f"{what}: {type(e).__name__}: {e}")
        logger.warning("report: could not write %s in %s: %s: %s", what, out, type(e).__name__, e)
        return None


def evaluation_report(out: Path) -> tuple[str | None, dict[str, Any] | None]:
    """(file name, content) of the report the plots are drawn from: test_report.json when it has labels (held
    out from any calibration fit), else eval_report.json; (None, None) when neither has."""
    for name in ("test_report.json", "eval_report.json"):
        report = read_json(out / name) or {}
        if report.get("labels"):
            return name, report
    return None, None


def draw_plots(out: str | Path, curves: bool = True) -> tuple[list[str], bool, list[str]]:
    """Draw the plots the files in `out` allow: the confusion matrix and the reliability diagram (from the test
    or eval report), the training curves (from trainer_state.json, when `curves`). Returns (files written,
    whether a label id stands in for a name, problems met)."""
    out = Path(out)
    problems: list[str] = []
    plots: list[str] = []
    by_id = False
    run_args = read_json(out / "run_args.json") or {}
    report_name, report = evaluation_report(out)
    if report is not None:
        split = "test" if report_name.startswith("test") else "validation"
        ok = _attempt(out, problems, CONFUSION_PNG, plot_confusion_matrix, report, out / CONFUSION_PNG,
                      f"confusion matrix ({split}, {sum(map(sum, report.get('confusion_matrix', [[0]])))} rows)"
                      if report.get("confusion_matrix") else f"confusion matrix per label ({split})")
        if ok is not None:
            plots.append(CONFUSION_PNG)
            by_id = ok
        if report.get("reliability"):
            def reliability():
                plot_reliability_diagram(report["reliability"], out / RELIABILITY_PNG, f"reliability ({split})")
                return True

            if _attempt(out, problems, RELIABILITY_PNG, reliability):
                plots.append(RELIABILITY_PNG)
    state_path = out / "trainer_state.json"
    if curves and state_path.is_file():
        def draw_curves():
            state = json.loads(state_path.read_text(encoding="utf-8"))
            plot_training_curves(state, out / CURVES_PNG, run_args.get("metric_for_best_model"),
                                 read_json(out / "all_results.json"))
            return True

        if _attempt(out, problems, CURVES_PNG, draw_curves):
            plots.append(CURVES_PNG)
    return plots, by_id, problems


def regenerate(out: str | Path) -> list[str]:
    """Draw the plots and write the model card of the finished run in `out`. Returns the problems met (each
    already warned about); an empty list means everything was written."""
    out = Path(out)
    plots, by_id, problems = draw_plots(out)

    def card():
        with atomic_open(out / CARD) as f:
            f.write(model_card(out, by_id=by_id, plots=plots))
        return True

    if _attempt(out, problems, CARD, card):
        plots.append(CARD)
    if plots:
        logger.info("report: %s in %s", ", ".join(plots), out)
    return problems


def write_evaluation_plots(out: str | Path) -> list[str]:
    """An evaluate-only run (a trained model measured on a labelled file): the confusion matrix and the
    reliability diagram of its eval/test report, beside it. Never raises; returns the files written."""
    plots, _, _ = draw_plots(out, curves=False)  # no training here
    if plots:
        logger.info("report: %s in %s", ", ".join(plots), out)
    return plots


def write_report(out: str | Path, argv: Sequence[str] | None = None, raw=None, sources: dict | None = None,
                 world_size: int = 1, given=None) -> list[str]:
    """Called by training on the main process at the end of a run: record the command, the options the user
    gave (`given`: the parser's `arguments.GivenOptions`) and the data, then draw the plots and write the model
    card. Never raises; problems are warnings."""
    problems: list[str] = []
    try:
        record_run(out, argv, raw, sources, world_size, given)
    except Exception as e:  # the card can still be written without run_info.json
        problems.append(f"{RUN_INFO}: {type(e).__name__}: {e}")
        logger.warning("report: could not write %s in %s: %s: %s", RUN_INFO, out, type(e).__name__, e)
    return problems + regenerate(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seqcls.report",
        description="Regenerate the plots and the model card of a finished run, without retraining.")
    parser.add_argument("output_dir", nargs="+", help="Output directory of a finished training run.")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    status = 0
    for d in args.output_dir:
        out = Path(d)
        if not (out / "run_args.json").is_file() and not (out / "trainer_state.json").is_file():
            print(f"error: {out} holds no finished training run (no run_args.json or trainer_state.json)",
                  file=sys.stderr)
            status = 2
            continue
        problems = regenerate(out)  # each problem is logged as a warning
        written = [n for n in (CONFUSION_PNG, RELIABILITY_PNG, CURVES_PNG, CARD) if (out / n).is_file()]
        print(f"{out}: {', '.join(written)}")
        status = status or (1 if problems else 0)
    return status


def cli(argv: list[str] | None = None) -> int:
    """`python -m seqcls.report DIR...` (seqcls.cli: a usage error is one line, exit 2)."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
