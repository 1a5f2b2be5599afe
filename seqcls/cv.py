"""K-fold cross-validation: fold files, out-of-fold predictions, CV metrics, label issues and a fold ensemble.

    K=5 CV_DIR=runs/cv scripts/cv.sh configs/quickstart.yaml          (runs the sub-commands below)

    python -m seqcls.cv split   --cv_dir runs/cv --k 5 -- CONFIG [options]   # CV_DIR/data/fold<i>/{train,heldout}.jsonl
    python -m seqcls.cv collect --cv_dir runs/cv                             # after the fold runs
    python -m seqcls.cv predict --cv_dir runs/cv INPUT.jsonl -o OUT.jsonl    # the k fold models averaged

Each fold is one run of the same recipe (run_classification.py) on the other folds' rows, with its own fold as
`--test_file`, so its `predict_results.jsonl` holds out-of-fold probabilities. `collect` puts them back in input
order (`oof_predictions.jsonl`), writes the metrics of every fold and their mean ± std (`cv_results.md`,
`cv_results.csv`) and, for classification, ranks the rows whose given label is likely wrong with cleanlab
(`label_issues.jsonl`, `label_issues.md`; `pip install 'seqcls[cv]'`).

Folds: scikit-learn's StratifiedKFold by label (single-label); iterative stratification (iterstrat's
MultilabelStratifiedKFold) for multi-label; StratifiedKFold over quantile bins of the target for regression.
Every row of a fold file keeps its position in the training file in the column `cv_row`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .cli import DEBUG_FLAG, DEBUG_HELP, run_cli
from .errors import UsageError
from .labels import MULTI, REGRESSION, SINGLE, LabelSpace, build_label_space
from .metrics import BEST_METRIC, classification_metrics, sigmoid, softmax
from .outputs import atomic_open, decode_logits, write_json, write_jsonl

logger = logging.getLogger(__name__)

ROW = "cv_row"  # the column holding a row's position in the training file
CV_CONFIG = "cv.json"
DATA = "data"
TOP_ROWS = 20  # rows in the Markdown table of label issues
EPS = 1e-7


def fold_name(i: int) -> str:
    return f"fold{i}"


# ----------------------------------------------------------------------------------------------------------
# Fold assignment


def assign_folds(labels: Sequence[Any], label_space: LabelSpace, k: int, seed: int, where: str = "train") -> np.ndarray:
    """The fold (0..k-1) of every row, stratified for the problem type; a UsageError when k cannot work."""
    from sklearn.model_selection import StratifiedKFold

    n = len(labels)
    if k < 2:
        raise UsageError(f"K={k}: cross-validation needs at least 2 folds; set K=2 or more")
    if k > n:
        raise UsageError(f"K={k}: {where} has only {n} rows; set K to at most {n}")
    folds = np.full(n, -1, dtype=np.int64)
    dummy = np.zeros((n, 1))
    if label_space.problem_type == SINGLE:
        y = np.array([label_space.encode(v, f"{where} row {i + 1}") for i, v in enumerate(labels)])
        counts = np.bincount(y, minlength=label_space.num_labels)
        present = counts[counts > 0]
        smallest = int(present.min())
        if k > smallest:
            name = label_space.names[int(np.flatnonzero(counts == smallest)[0])]
            raise UsageError(f"K={k}: label {name!r} has only {smallest} row(s) in {where}, fewer than the folds; "
                             f"set K to at most {smallest} or add rows of that label")
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(dummy, y)
    elif label_space.problem_type == MULTI:
        y = np.array([label_space.encode(v, f"{where} row {i + 1}") for i, v in enumerate(labels)], dtype=np.int64)
        counts = y.sum(axis=0)
        used = counts[counts > 0]
        if used.size and k > int(used.min()):
            name = label_space.names[int(np.flatnonzero(counts == used.min())[0])]
            raise UsageError(f"K={k}: label {name!r} is on only {int(used.min())} row(s) in {where}, fewer than the "
                             f"folds; set K to at most {int(used.min())} or add rows with that label")
        try:
            from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
        except ImportError:
            raise UsageError("multi-label cross-validation needs iterative stratification: "
                             "pip install 'seqcls[cv]' (iterative-stratification)") from None
        splits = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(dummy, y)
    else:
        y = np.array([label_space.encode(v, f"{where} row {i + 1}") for i, v in enumerate(labels)])
        # quantile bins by rank, so ties cannot empty a bin: at least k rows per bin, at most 10 bins
        n_bins = max(1, min(10, n // k))
        ranks = np.argsort(np.argsort(y, kind="stable"), kind="stable")
        bins = ranks * n_bins // n
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(dummy, bins)
    for i, (_, held) in enumerate(splits):
        folds[held] = i
    assert (folds >= 0).all()
    return folds


# ----------------------------------------------------------------------------------------------------------
# split: the fold files


def _parse_recipe(recipe: list[str]):
    from .arguments import parse_args

    return parse_args(list(recipe))


def _load_train(data_args):
    """The training rows exactly as training reads them (same file checks), after max_train_samples."""
    import copy

    from .data import Columns, cut, load_raw_datasets

    if data_args.dataset_name:  # the fold runs' --train_file would be ignored next to a dataset_name
        raise UsageError(f"dataset_name {data_args.dataset_name!r}: cross-validation splits a train_file; save the "
                         "train split as JSON lines and give it as train_file")
    if not data_args.train_file:
        raise UsageError("cross-validation needs training data: give train_file in the config or --train_file")
    if data_args.validation_file and Path(data_args.validation_file).suffix.lower() not in (".jsonl", ".json"):
        raise UsageError(f"validation_file {data_args.validation_file}: the fold files are JSON lines and a run "
                         "reads one format; give the validation data as .jsonl")
    if data_args.max_predict_samples is not None:
        raise UsageError("max_predict_samples would cut the held-out folds; remove it for cross-validation")
    only_train = copy.copy(data_args)
    only_train.validation_file = None
    only_train.test_file = None
    only_train.validation_split_percentage = None
    raw, sources = load_raw_datasets(only_train)
    if "train" not in raw:
        raise UsageError("cross-validation needs a train split; give train_file or a dataset with one")
    train = raw["train"]
    if data_args.shuffle_train_dataset:
        train = train.shuffle(seed=data_args.shuffle_seed)
    train = cut(train, data_args.max_train_samples)
    cols = Columns.from_args(data_args)
    if ROW in train.column_names:
        raise UsageError(f"{sources['train'].name}: the column {ROW!r} is reserved for cross-validation; rename it")
    return train, sources["train"], cols


def _settings(k: int, seed: int, recipe: list[str], n_rows: int, digest: str) -> dict[str, Any]:
    # the rows' digest: an edited training file under the same options must not mix with the folds run before
    return {"k": k, "seed": seed, "recipe": list(recipe), "train_rows": n_rows, "train_sha256": digest}


def check_same_cv(cv_dir: Path, settings: dict[str, Any]) -> None:
    """A CV directory holds one CV: re-running with other options would mix fold runs."""
    file = cv_dir / CV_CONFIG
    if not file.is_file():
        if cv_dir.is_dir() and any(p.is_dir() and (p / "params.json").is_file() for p in cv_dir.iterdir()):
            raise UsageError(f"{cv_dir} holds runs but no {CV_CONFIG}; give another CV_DIR")
        return
    try:
        before = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{file}: unreadable ({e}); delete {cv_dir} or give another CV_DIR") from None
    differ = [key for key in settings if before.get(key) != settings[key]]
    if differ:
        named = {"recipe": "the recipe options", "train_sha256": "the training rows"}
        what = ", ".join(named.get(key) or f"{key} {before.get(key)!r} -> {settings[key]!r}" for key in differ)
        raise UsageError(f"{cv_dir} holds another cross-validation ({what}); give another CV_DIR, or delete it to "
                         "start over")


def split(cv_dir: str | Path, k: int, recipe: list[str], seed: int = 42) -> list[Path]:
    """Write CV_DIR/cv.json and CV_DIR/data/fold<i>/{train,heldout}.jsonl; return the fold data directories.

    Everything is checked before anything is written."""
    cv_dir = Path(cv_dir)
    _, data_args, _ = _parse_recipe(recipe)
    train, source, cols = _load_train(data_args)
    labels = train[cols.label]
    label_space = build_label_space(labels, data_args.problem_type, data_args.class_names, data_args.do_regression,
                                    where=source.name)
    folds = assign_folds(labels, label_space, k, seed, where=source.name)
    rows = [{**row, ROW: i} for i, row in enumerate(train)]
    import hashlib

    digest = hashlib.sha256("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) for r in rows).encode())
    settings = _settings(k, seed, recipe, len(train), digest.hexdigest())
    check_same_cv(cv_dir, settings)

    dirs = []
    for f in range(k):
        d = cv_dir / DATA / fold_name(f)
        # a finished fold must keep its files byte for byte: they are rewritten identically (same rows, same seed)
        write_jsonl(d / "train.jsonl", (r for r, g in zip(rows, folds) if g != f))
        write_jsonl(d / "heldout.jsonl", (r for r, g in zip(rows, folds) if g == f))
        dirs.append(d)
    write_json(cv_dir / CV_CONFIG, {**settings, "problem_type": label_space.problem_type,
                                    "label_space": label_space.to_dict(), "label_column": cols.label,
                                    "text_columns": cols.text, "text_column_delimiter": cols.delimiter,
                                    "text_pair_column": cols.pair, "id_column": cols.id,
                                    "fold_sizes": np.bincount(folds, minlength=k).tolist()})
    logger.info("%d folds of %s in %s: %s rows", k, source.name, cv_dir, np.bincount(folds).tolist())
    return dirs


# ----------------------------------------------------------------------------------------------------------
# collect: out-of-fold predictions, CV metrics, label issues


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def probabilities_matrix(label_space: LabelSpace, rows: Sequence[dict]) -> np.ndarray:
    """(n, labels) probabilities in label-id order from result rows' `probabilities` (name -> probability)."""
    return np.array([[row["probabilities"][name] for name in label_space.names] for row in rows], dtype=np.float64)


def as_logits(problem_type: str, probs: np.ndarray) -> np.ndarray:
    """Logits whose softmax (single-label) or sigmoid (multi-label) are `probs`, so `decode_logits` and the metrics,
    which take logits, work on averaged or stored probabilities."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    if problem_type == SINGLE:
        return np.log(p)
    if problem_type == MULTI:
        return np.log(p) - np.log1p(-p)
    return np.asarray(probs, dtype=np.float64)


def _text(row: dict, cfg: dict) -> str:
    text = cfg["text_column_delimiter"].join(str(row.get(c) or "") for c in cfg["text_columns"])
    if cfg.get("text_pair_column"):
        text += " [SEP] " + str(row.get(cfg["text_pair_column"]) or "")
    return text


def read_cv_config(cv_dir: Path) -> dict[str, Any]:
    file = cv_dir / CV_CONFIG
    if not file.is_file():
        raise UsageError(f"{cv_dir} holds no cross-validation ({CV_CONFIG} missing); run scripts/cv.sh first")
    return json.loads(file.read_text(encoding="utf-8"))


def fold_metrics(cv_dir: Path, cfg: dict[str, Any]):
    """The fold runs (seqcls.sweep's view of a run directory) and mean ± std of their held-out metrics."""
    from .sweep import _mean_std, collect_runs

    runs = [r for r in collect_runs(cv_dir) if r.name.startswith("fold")]
    done = [r for r in runs if r.status == "done"]
    keys = sorted({key for r in done for key, v in r.results.items()
                   if key.startswith("test_") and isinstance(v, (int, float))
                   and not key.endswith(("_samples", "_runtime", "_per_second"))})
    stats = {}
    for key in keys:
        values = [float(r.results[key]) for r in done if isinstance(r.results.get(key), (int, float))]
        stats[key] = _mean_std(values)
    return runs, stats


def out_of_fold(cv_dir: Path, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Every training row's out-of-fold prediction, in input order: row, id, given label, fold, prediction."""
    n = cfg["train_rows"]
    oof: list[dict[str, Any] | None] = [None] * n
    for f in range(cfg["k"]):
        held = _read_jsonl(cv_dir / DATA / fold_name(f) / "heldout.jsonl")
        results_file = cv_dir / fold_name(f) / "predict_results.jsonl"
        if not results_file.is_file():
            raise UsageError(f"{results_file} missing: fold {f} has not finished; re-run scripts/cv.sh to run it")
        preds = _read_jsonl(results_file)
        if len(preds) != len(held):
            raise UsageError(f"{results_file}: {len(preds)} predictions for {len(held)} held-out rows; the fold run "
                             "cut its test set (max_predict_samples?); delete that fold's directory and re-run")
        for row, pred in zip(held, preds):
            i = int(row[ROW])
            out = {"row": i, "id": row.get(cfg["id_column"], i) if cfg.get("id_column") else i,
                   "label": row[cfg["label_column"]], "fold": f, "predicted": pred["label"], "score": pred["score"]}
            if "probabilities" in pred:
                out["probabilities"] = pred["probabilities"]
            out["text"] = _text(row, cfg)
            oof[i] = out
    missing = [i for i, r in enumerate(oof) if r is None]
    if missing:
        raise UsageError(f"{cv_dir}: rows {missing[:5]} are in no fold; delete {cv_dir} and re-run")
    return oof  # type: ignore[return-value]


def find_label_issues(label_space: LabelSpace, oof: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows cleanlab flags as likely mislabelled, most likely first: row, id, text, given label, suggested
    label and score (cleanlab's label quality: 0 = surely wrong, 1 = surely right)."""
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        raise UsageError("label issues need cleanlab: pip install 'seqcls[cv]'") from None
    probs = probabilities_matrix(label_space, oof)
    names = label_space.names
    if label_space.problem_type == SINGLE:
        from cleanlab.filter import find_label_issues as find
        from cleanlab.rank import get_label_quality_scores

        given = np.array([label_space.encode(r["label"], f"row {r['row']}") for r in oof])
        ranked = find(given, probs, return_indices_ranked_by="self_confidence")
        scores = get_label_quality_scores(given, probs, method="self_confidence")
        suggested = [names[int(probs[i].argmax())] for i in range(len(oof))]
    else:
        from cleanlab.multilabel_classification.filter import find_label_issues as find
        from cleanlab.multilabel_classification.rank import get_label_quality_scores

        targets = [label_space.encode(r["label"], f"row {r['row']}") for r in oof]
        given_ids = [[j for j, t in enumerate(target) if t >= 0.5] for target in targets]
        ranked = find(given_ids, probs, return_indices_ranked_by="self_confidence")
        scores = get_label_quality_scores(given_ids, probs)
        suggested = [[names[j] for j in np.flatnonzero(p >= 0.5)] for p in probs]
    return [{"rank": rank + 1, "row": oof[i]["row"], "id": oof[i]["id"], "text": oof[i]["text"],
             "given_label": oof[i]["label"], "suggested_label": suggested[i], "score": round(float(scores[i]), 6)}
            for rank, i in enumerate(int(j) for j in ranked)]


def _cell(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[:width - 1] + "…"


def issues_markdown(issues: Sequence[dict[str, Any]], n_rows: int, top: int = TOP_ROWS) -> str:
    lines = ["# Likely label errors", "",
             f"cleanlab flags {len(issues)} of {n_rows} rows ({100 * len(issues) / max(n_rows, 1):.1f}%) from the "
             f"out-of-fold probabilities, most likely wrong first (score: cleanlab's label quality, low = likely "
             f"wrong). The first {min(top, len(issues))}:", "",
             "| rank | row | id | given | suggested | score | text |", "|---:|---:|---|---|---|---:|---|"]
    for r in issues[:top]:
        lines.append(f"| {r['rank']} | {r['row']} | {_cell(r['id'], 20)} | {_cell(r['given_label'], 30)} | "
                     f"{_cell(r['suggested_label'], 30)} | {r['score']:.4f} | {_cell(r['text'])} |")
    return "\n".join(lines) + "\n"


def cv_markdown(cv_dir: Path, cfg: dict, runs, stats: dict, pooled: dict[str, float] | None) -> str:
    problem_type = cfg["problem_type"]
    best, greater = BEST_METRIC[problem_type]
    from .sweep import _fmt

    done = [r for r in runs if r.status == "done"]
    status = ", ".join(f"{r.name} {r.status}" for r in runs)
    lines = [f"# Cross-validation {cv_dir.name}", "",
             f"K={cfg['k']} folds over {cfg['train_rows']} training rows (seed {cfg['seed']}); {len(done)} of "
             f"{cfg['k']} folds done ({status}). Metrics on each held-out fold; `test_{best}` "
             f"({'higher' if greater else 'lower'} is better) first.", "",
             "| metric | mean ± std over folds | pooled out-of-fold |", "|---|---:|---:|"]
    keys = sorted(stats, key=lambda key: (key != f"test_{best}", key))
    for key in keys:
        pooled_value = pooled.get(key.removeprefix("test_")) if pooled else None
        lines.append(f"| {key} | {_fmt(*stats[key])} | {'' if pooled_value is None else f'{pooled_value:.4f}'} |")
    lines += ["", "| fold | status | " + " | ".join(keys) + " |", "|---|---|" + "---:|" * len(keys)]
    for r in runs:
        cells = [f"{r.results[key]:.4f}" if isinstance(r.results.get(key), (int, float)) else "" for key in keys]
        lines.append(f"| {r.name} | {r.status} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def collect(cv_dir: str | Path) -> dict[str, Any]:
    """Write cv_results.{md,csv}; with every fold done also oof_predictions.jsonl and, for classification,
    label_issues.{jsonl,md}. Returns what was found."""
    from .sweep import write_csv

    cv_dir = Path(cv_dir)
    cfg = read_cv_config(cv_dir)
    label_space = LabelSpace(cfg["label_space"]["problem_type"], tuple(cfg["label_space"]["names"]))
    runs, stats = fold_metrics(cv_dir, cfg)
    complete = sum(r.status == "done" for r in runs) == cfg["k"]
    result: dict[str, Any] = {"runs": runs, "stats": stats, "complete": complete, "oof": None, "issues": None}
    pooled = None
    if complete:
        oof = out_of_fold(cv_dir, cfg)
        write_jsonl(cv_dir / "oof_predictions.jsonl", ({k: v for k, v in r.items() if k != "text"} for r in oof))
        result["oof"] = oof
        if label_space.problem_type == REGRESSION:
            predictions = np.array([[r["predicted"]] for r in oof])
            truth = np.array([label_space.encode(r["label"], f"row {r['row']}") for r in oof])
            pooled = classification_metrics(label_space, predictions, truth)
            logger.info("label issues are found for classification only; none for regression")
        else:
            probs = probabilities_matrix(label_space, oof)
            truth = np.array([label_space.encode(r["label"], f"row {r['row']}") for r in oof])
            pooled = classification_metrics(label_space, as_logits(label_space.problem_type, probs), truth)
            issues = find_label_issues(label_space, oof)
            write_jsonl(cv_dir / "label_issues.jsonl", issues)
            with atomic_open(cv_dir / "label_issues.md") as f:
                f.write(issues_markdown(issues, len(oof)))
            result["issues"] = issues
    result["pooled"] = pooled
    write_csv(runs, [], cv_dir / "cv_results.csv")
    text = cv_markdown(cv_dir, cfg, runs, stats, pooled)
    with atomic_open(cv_dir / "cv_results.md") as f:
        f.write(text)
    result["markdown"] = text
    return result


# ----------------------------------------------------------------------------------------------------------
# The fold ensemble


def fold_model_dirs(cv_dir: str | Path) -> list[Path]:
    cv_dir = Path(cv_dir)
    cfg = read_cv_config(cv_dir)
    dirs = [cv_dir / fold_name(f) for f in range(cfg["k"])]
    missing = [str(d) for d in dirs if not (d / "config.json").is_file()]
    if missing:
        raise UsageError(f"fold model(s) missing: {', '.join(missing)}; re-run scripts/cv.sh to finish the folds")
    return dirs


def predict_ensemble(model_dirs: Sequence[str | Path], texts: Sequence[str], text_pairs: Sequence[str] | None = None,
                     *, batch_size: int = 64, device: str | None = None, top_k: int | None = None,
                     classifiers: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """Predict with several models of one label space, averaging their probabilities (the mean value for
    regression); rows as `Classifier.predict` gives them. Models are loaded one at a time unless given."""
    from .predict import Classifier

    if not model_dirs and not classifiers:
        raise UsageError("predict_ensemble: no models given")
    total = None
    label_space = None
    thresholds = []
    for item in (classifiers or model_dirs):
        clf = item if classifiers else Classifier.from_pretrained(item, device=device)
        if label_space is None:
            label_space = clf.label_space
        elif clf.label_space != label_space:
            raise UsageError(f"{item}: its labels {list(clf.label_space.names)} differ from the first model's "
                             f"{list(label_space.names)}; ensemble models of one training set")
        logits = clf.predict_logits(texts, text_pairs, batch_size=batch_size).astype(np.float64)
        if label_space.problem_type == SINGLE:
            probs = softmax(logits)
        elif label_space.problem_type == MULTI:
            probs = sigmoid(logits)
        else:
            probs = logits
        total = probs if total is None else total + probs
        if clf.thresholds is not None:
            thresholds.append(clf.thresholds)
    mean = total / len(classifiers or model_dirs)
    cut = np.mean(thresholds, axis=0).tolist() if thresholds else None  # each fold's tuned thresholds, averaged
    return decode_logits(label_space, as_logits(label_space.problem_type, mean), cut, top_k)


def _predict_cli(args: argparse.Namespace) -> int:
    from .corpus import BadRow, Corpus
    from .predict import Classifier

    dirs = fold_model_dirs(args.cv_dir)
    first = Classifier.from_pretrained(dirs[0], device=args.device)
    corpus = Corpus(args.input, "auto", first.columns, args.id_column)  # seqcls-predict's reader and row rules
    try:
        rows = [row for _, _, chunk in corpus.chunks(8192, lambda k: True) for row in chunk]
    finally:
        corpus.close()
    cols = corpus.cols
    bad = [r for r in rows if isinstance(r, BadRow)]
    if bad:
        raise UsageError(f"{bad[0].where}: {bad[0].reason}")
    texts = [cols.delimiter.join(str(r.values[c]) for c in cols.text) for r in rows]
    pairs = [str(r.values[cols.pair]) for r in rows] if cols.pair else None
    results = predict_ensemble(dirs, texts, pairs, batch_size=args.batch_size, device=args.device)
    ids = [r.values[args.id_column] if args.id_column else r.index for r in rows]
    write_jsonl(args.output, ({"id": i, **res} for i, res in zip(ids, results)))
    print(f"{len(results)} predictions of the {len(dirs)} fold models averaged: {args.output}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m seqcls.cv", description=__doc__.split("\n")[0])
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("split", help="Write the fold files (everything after -- is the training recipe).")
    p.add_argument("--cv_dir", required=True)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=42, help="Seed of the fold assignment.")
    p.add_argument("recipe", nargs=argparse.REMAINDER, help="-- CONFIG [--key value ...], as for run_classification.py")
    p = sub.add_parser("collect", help="Out-of-fold predictions, CV metrics and label issues.")
    p.add_argument("--cv_dir", required=True)
    p = sub.add_parser("predict", help="Predict with the k fold models averaged.")
    p.add_argument("--cv_dir", required=True)
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--device", default=None)
    p.add_argument("--id_column", default=None, help="Column copied as `id` (default: the row index), as in "
                   "seqcls-predict.")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "split":
        recipe = args.recipe[1:] if args.recipe[:1] == ["--"] else args.recipe
        dirs = split(args.cv_dir, args.k, recipe, args.seed)
        print(f"{len(dirs)} folds written under {Path(args.cv_dir) / DATA}")
    elif args.command == "collect":
        result = collect(args.cv_dir)
        print(result["markdown"])
        if result["issues"] is not None:
            print(issues_markdown(result["issues"], len(result["oof"]), top=10))
        if not result["complete"]:
            print("not every fold finished: no out-of-fold predictions yet; re-run scripts/cv.sh", file=sys.stderr)
            return 1
    else:
        return _predict_cli(args)
    return 0


def cli(argv: list[str] | None = None) -> int:
    """`python -m seqcls.cv split|collect|predict` (seqcls.cli: one line and exit 2 for a usage error)."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
