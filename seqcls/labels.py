"""The label space: label names and ids, the problem type, and how one row's label becomes a training target.

Pure Python (no torch, no datasets): training, evaluation and prediction all use this one definition.

- single-label: each label is a string (or an integer); ids follow `class_names` if given, else the sorted names.
- multi-label: each label is a list of names; the target is a multi-hot vector of floats.
- regression: each label is a number; one output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .errors import UsageError

SINGLE = "single_label_classification"
MULTI = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = (SINGLE, MULTI, REGRESSION)


def _kind(value: Any) -> str:
    """The label kind of one value: 'str', 'int', 'float', 'list' or 'null'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "str"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def infer_problem_type(values: Iterable[Any], where: str = "train") -> str:
    """Infer the problem type from the labels of the train split."""
    kinds: dict[str, int] = {}
    for v in values:
        k = _kind(v)
        kinds[k] = kinds.get(k, 0) + 1
    if not kinds:
        raise UsageError(f"{where}: no labels found; the split is empty")
    if "null" in kinds:
        raise UsageError(f"{where}: {kinds['null']} row(s) have a null label; fill or remove them")
    found = set(kinds)
    if found == {"list"}:
        return MULTI
    if found <= {"str", "bool"} or found == {"int"}:
        return SINGLE
    if found <= {"int", "float"}:
        return REGRESSION
    listing = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    raise UsageError(
        f"{where}: the label column mixes types ({listing}); use one type: strings or integers for single-label, "
        "lists for multi-label, numbers for regression"
    )


def _name(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@dataclass(frozen=True)
class LabelSpace:
    """Label names in id order and the problem type. `names` is empty for regression."""

    problem_type: str
    names: tuple[str, ...] = ()
    label_type: str = "str"  # "int": the data's labels were integers, and predictions give them back as integers

    def __post_init__(self) -> None:
        if self.problem_type not in PROBLEM_TYPES:
            raise UsageError(f"problem_type must be one of {', '.join(PROBLEM_TYPES)}, got {self.problem_type!r}")
        if self.problem_type != REGRESSION and len(self.names) < 2 and self.problem_type == SINGLE:
            raise UsageError(
                f"single-label classification needs at least 2 labels, found {list(self.names)}; "
                "check label_column_name"
            )
        if len(set(self.names)) != len(self.names):
            raise UsageError(f"class_names has duplicates: {list(self.names)}")

    @property
    def num_labels(self) -> int:
        return 1 if self.problem_type == REGRESSION else len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        if self.problem_type == REGRESSION:
            return {0: "score"}
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    def encode(self, value: Any, where: str) -> int | float | list[float]:
        """One row's label as the model's target; `where` names the file and line for the error message."""
        if value is None:
            raise UsageError(f"{where}: the label is null; give every row a label")
        if self.problem_type == REGRESSION:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{where}: regression label {value!r} is not a number")
            value = float(value)
            if not math.isfinite(value):
                raise UsageError(f"{where}: regression label {value} is not finite; fix or drop the row")
            return value
        index = self.label2id
        if self.problem_type == MULTI:
            if not isinstance(value, (list, tuple)):
                raise UsageError(f"{where}: multi-label rows need a list of label names, got {value!r}")
            target = [0.0] * len(self.names)
            for item in value:
                _check_item(item, value, where)
                name = _name(item)
                if name not in index:
                    raise UsageError(self._unknown(name, where))
                target[index[name]] = 1.0
            return target
        if isinstance(value, (list, tuple, dict)) or isinstance(value, float):
            raise UsageError(
                f"{where}: label {value!r} is a {type(value).__name__} in a single-label dataset; "
                "give one name per row (or set problem_type)"
            )
        name = _name(value)
        if name not in index:
            raise UsageError(self._unknown(name, where, value))
        return index[name]

    def _unknown(self, name: str, where: str, value: Any = None) -> str:
        kind = _kind(value)
        if (self.label_type, kind) in (("int", "str"), ("str", "int")):  # e.g. "pos" in train, 1 in validation
            train = "integers" if self.label_type == "int" else "strings"
            this = "an integer" if kind == "int" else "a string"
            return (f"{where}: label {value!r} is {this}, but the train labels are {train} {list(self.names)}; "
                    "use one label type in every file")
        return (
            f"{where}: label {name!r} is not among the train labels {list(self.names)}; "
            "fix the row, or list every label with class_names"
        )

    def value(self, name: str) -> str | int:
        """A label as the data wrote it: the name, or the integer it stands for."""
        return int(name) if self.label_type == "int" else name

    def to_dict(self) -> dict[str, Any]:
        saved: dict[str, Any] = {"problem_type": self.problem_type, "names": list(self.names)}
        if self.label_type != "str":
            saved["label_type"] = self.label_type
        return saved


def _check_item(item: Any, value: Any, where: str) -> None:
    """A label name (the row's label, or one item of its multi-label list) is a non-empty name or a number."""
    if item is not value and (isinstance(item, (list, tuple, dict)) or item is None):
        raise UsageError(f"{where}: label {value!r} holds {item!r} ({_kind(item)}); a multi-label row is a flat "
                         'list of label names, e.g. ["sports", "politics"]')
    if isinstance(item, str) and not item.strip():
        if item is value:
            raise UsageError(f"{where}: the label is empty ({value!r}); give every row a label or remove the row")
        raise UsageError(f"{where}: label {value!r} holds an empty name; remove it from the list")


def _sorted_names(names: set[str], raw_kinds: set[str]) -> list[str]:
    if raw_kinds == {"int"}:
        return sorted(names, key=int)
    return sorted(names)


def build_label_space(
    train_labels: Sequence[Any],
    problem_type: str | None = None,
    class_names: Sequence[str] | None = None,
    do_regression: bool | None = None,
    where: str = "train",
) -> LabelSpace:
    """Build the label space from the train split's labels and the user's overrides."""
    if do_regression:
        problem_type = problem_type or REGRESSION
    if problem_type is None:
        problem_type = infer_problem_type(train_labels, where)
    if problem_type == REGRESSION:
        if class_names:
            raise UsageError("class_names makes no sense for regression; remove it or set problem_type")
        return LabelSpace(REGRESSION)
    found: set[str] = set()
    kinds: set[str] = set()
    for value in train_labels:
        if value is None:
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            _check_item(item, value, where)
            kinds.add(_kind(item))
            found.add(_name(item))
    label_type = "int" if kinds == {"int"} else "str"
    if class_names:
        names = [str(n) for n in class_names]
        missing = sorted(found - set(names))
        if missing:
            raise UsageError(f"{where}: label(s) {missing} are not in class_names {names}; add them to class_names")
        if label_type == "int" and not all(n.lstrip("-").isdigit() for n in names):
            label_type = "str"
        return LabelSpace(problem_type, tuple(names), label_type)
    return LabelSpace(problem_type, tuple(_sorted_names(found, kinds)), label_type)


def label_space_from_config(id2label: dict, problem_type: str | None) -> LabelSpace:
    """Rebuild the label space saved in a model's config (for prediction)."""
    problem_type = problem_type or SINGLE
    if problem_type == REGRESSION:
        return LabelSpace(REGRESSION)
    names = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    return LabelSpace(problem_type, names)
