"""The trained model directory: the contract between a training run and every consumer of its output.

A training run's `output_dir` is what users ship. This module is its one owner:

- `ModelSettings`, the typed form of `seqcls.json` (label space, text columns, truncation, the pooling token,
  thresholds, format version), written with `write_settings` and read, checked, with `read_settings`;
- `load`: a plain or a LoRA adapter directory (merged into its base) with its tokenizer configured exactly as in
  training (pooling marker, pad token kept off it, sides, max length), refusing directories whose head is not
  trained or whose files contradict each other;
- `save`: a model directory written whole or not at all (merge, export).

What training does to the text is carried by the saved tokenizer itself, so that a consumer that knows nothing of
seqcls (`pipeline`, vLLM, an export) gets the same tokens: the pooling marker is appended by the tokenizer's
post-processor (truncation keeps it last), `model_max_length` is the trained max_seq_length and the padding and
truncation sides are saved with it. Training, evaluation-only runs, `Classifier`/`seqcls-predict`, `seqcls-merge`
and the report all go through here; nothing else parses `seqcls.json`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .data import Columns
from .prompts import Prompt
from .errors import UsageError
from .labels import MULTI, PROBLEM_TYPES, REGRESSION, LabelSpace, label_space_from_config

if TYPE_CHECKING:  # torch and transformers are imported when a model is loaded: reading settings stays instant
    import torch

logger = logging.getLogger(__name__)

SETTINGS_FILE = "seqcls.json"
ADAPTER_CONFIG = "adapter_config.json"
CLASSIFIER_CONFIG = "classifier_config.json"  # the classifier's config in an adapter dir (not config.json, which
# would make transformers take the directory for a full model and look for model.safetensors there)
# 1: seqcls 0.1 (the pooling marker was appended by seqcls code, not by the saved tokenizer; no padding_side)
# 2: the saved tokenizer appends the marker itself and carries model_max_length and both sides
FORMAT = 2
SIDES = ("left", "right")
RESTORE = "restore it from the training run (or retrain)"


@dataclass(frozen=True)
class ModelSettings:
    """What a consumer needs besides the weights to give the run's own predictions (`seqcls.json`)."""

    label_space: LabelSpace
    text_column_names: tuple[str, ...] = ("text",)
    text_column_delimiter: str = " "
    text_pair_column_name: str | None = None
    max_seq_length: int | None = None  # None: a directory not written by seqcls (the tokenizer's limit applies)
    truncation_side: str = "right"
    padding_side: str = "right"
    pooling_token: str | None = None
    thresholds: tuple[float, ...] | None = None  # multi-label only: one per label, in label order
    export: dict[str, Any] | None = field(default=None, compare=False)  # seqcls-export: format, quantize, inputs, ...
    # temperature scaling folded into the head (seqcls.calibration.calibration_record): method, temperatures,
    # fitted_on, rows, before/after metrics. A record only: the weights already give the calibrated probabilities
    calibration: dict[str, Any] | None = field(default=None, compare=False)
    prompt_template: str | None = None  # seqcls.prompts: what wraps every text (None, False, None: nothing)
    use_chat_template: bool = False
    system_prompt: str | None = None
    format: int = FORMAT
    seqcls_version: str | None = field(default=None, compare=False)
    source: str = field(default=SETTINGS_FILE, compare=False)  # where they were read from, for error messages

    @property
    def columns(self) -> Columns:
        return Columns(text=list(self.text_column_names), delimiter=self.text_column_delimiter,
                       pair=self.text_pair_column_name, prompt=self.prompt)

    @property
    def prompt(self) -> Prompt:
        return Prompt(self.prompt_template, self.use_chat_template, self.system_prompt)

    def to_dict(self) -> dict[str, Any]:
        from . import __version__

        return {
            "format": FORMAT,
            "seqcls_version": __version__,
            "label_space": self.label_space.to_dict(),
            "text_column_names": list(self.text_column_names),
            "text_column_delimiter": self.text_column_delimiter,
            "text_pair_column_name": self.text_pair_column_name,
            "max_seq_length": self.max_seq_length,
            "truncation_side": self.truncation_side,
            "padding_side": self.padding_side,
            "pooling_token": self.pooling_token,
            "thresholds": None if self.thresholds is None else [float(t) for t in self.thresholds],
            **({"export": self.export} if self.export is not None else {}),
            "calibration": self.calibration,
            "prompt_template": self.prompt_template,
            "use_chat_template": self.use_chat_template,
            "system_prompt": self.system_prompt,
        }

    @classmethod
    def from_dict(cls, saved: Any, where: str) -> "ModelSettings":
        """Parse and check a seqcls.json object; every problem names the file and the field."""

        def bad(name: str, problem: str) -> UsageError:
            return UsageError(f"{where}: field {name!r} {problem}; {RESTORE}")

        if not isinstance(saved, dict):
            raise UsageError(f"{where}: expected a JSON object; {RESTORE}")
        fmt = saved.get("format", 1)
        if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
            raise bad("format", f"is {fmt!r}, not a format number")
        if fmt > FORMAT:
            raise UsageError(f"{where}: written by seqcls {saved.get('seqcls_version', '?')} in settings format "
                             f"{fmt}, newer than this seqcls reads ({FORMAT}); upgrade seqcls (pip install -U seqcls)")
        space = saved.get("label_space")
        if not isinstance(space, dict):
            raise bad("label_space", "is missing or not an object")
        problem_type, names = space.get("problem_type"), space.get("names") or []
        if problem_type not in PROBLEM_TYPES:
            raise bad("label_space.problem_type", f"is {problem_type!r}, not one of {', '.join(PROBLEM_TYPES)}")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise bad("label_space.names", "must be a list of label names")
        if problem_type != REGRESSION and not names:
            raise bad("label_space.names", f"is empty for {problem_type}")
        label_type = space.get("label_type", "str")
        if label_type not in ("str", "int") or (label_type == "int" and not all(
                n.lstrip("-").isdigit() for n in names)):
            raise bad("label_space.label_type", f"is {label_type!r}: str, or int for names that are integers")
        try:
            label_space = LabelSpace(problem_type, tuple(names), label_type)
        except UsageError as e:
            raise bad("label_space", f"is inconsistent ({e})") from None
        text = saved.get("text_column_names", ["text"])
        text = [text] if isinstance(text, str) else text
        if not isinstance(text, list) or not text or not all(isinstance(t, str) and t for t in text):
            raise bad("text_column_names", "must be a non-empty list of column names")
        delimiter = saved.get("text_column_delimiter", " ")
        if not isinstance(delimiter, str):
            raise bad("text_column_delimiter", "must be a string")
        pair = saved.get("text_pair_column_name")
        if pair is not None and not (isinstance(pair, str) and pair):
            raise bad("text_pair_column_name", "must be a column name or null")
        max_len = saved.get("max_seq_length")
        if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1):
            raise bad("max_seq_length", f"is {max_len!r}, not a positive whole number")
        sides = {}
        for name in ("truncation_side", "padding_side"):
            sides[name] = saved.get(name) or "right"
            if sides[name] not in SIDES:
                raise bad(name, f"is {sides[name]!r}, not left or right")
        marker = saved.get("pooling_token")
        if marker is not None and not (isinstance(marker, str) and marker):
            raise bad("pooling_token", "must be a token or null")
        thresholds = saved.get("thresholds")
        if thresholds is not None:
            if problem_type != MULTI:
                raise bad("thresholds", f"is given for a {problem_type} model; only multi-label models have them")
            if isinstance(thresholds, dict):  # {name: threshold}, e.g. written by hand; missing names keep 0.5
                unknown = sorted(set(thresholds) - set(names))
                if unknown:
                    raise bad("thresholds", f"names unknown label(s) {unknown}")
                thresholds = [thresholds.get(n, 0.5) for n in names]
            if (not isinstance(thresholds, list) or len(thresholds) != len(names)
                    or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1
                               for t in thresholds)):
                raise bad("thresholds", f"must be {len(names)} numbers between 0 and 1 (one per label), got "
                                        f"{json.dumps(thresholds)[:80]}")
            thresholds = tuple(float(t) for t in thresholds)
        export = saved.get("export")
        if export is not None and not isinstance(export, dict):
            raise bad("export", "must be an object (written by seqcls-export)")
        calibration = saved.get("calibration")
        if calibration is not None:
            temps = calibration.get("temperatures") if isinstance(calibration, dict) else None
            want = len(names) if problem_type == MULTI else 1
            if problem_type == REGRESSION:
                raise bad("calibration", "is given for a regression model; only classifiers are calibrated")
            if not isinstance(calibration, dict) or calibration.get("method") != "temperature":
                raise bad("calibration", "must be an object with method \"temperature\"")
            if (not isinstance(temps, list) or len(temps) != want
                    or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in temps)):
                raise bad("calibration.temperatures", f"must be {want} positive number(s), got "
                                                      f"{json.dumps(temps)[:80]}")
        template, chat, system = (saved.get(k) for k in ("prompt_template", "use_chat_template", "system_prompt"))
        for name, value in (("prompt_template", template), ("system_prompt", system)):
            if value is not None and not isinstance(value, str):
                raise bad(name, "must be a string or null")
        if chat is not None and not isinstance(chat, bool):
            raise bad("use_chat_template", "must be true or false")
        try:
            Prompt(template, bool(chat), system).check(pair)
        except UsageError as e:
            raise bad("prompt_template", f"is unusable ({e})") from None
        return cls(label_space=label_space, text_column_names=tuple(text), text_column_delimiter=delimiter,
                   text_pair_column_name=pair, max_seq_length=max_len, pooling_token=marker, thresholds=thresholds,
                   calibration=calibration, export=export, prompt_template=template, use_chat_template=bool(chat),
                   system_prompt=system, format=fmt, seqcls_version=saved.get("seqcls_version"), source=where,
                   **sides)


def write_settings(out_dir: str | Path, settings: ModelSettings) -> None:
    from .outputs import write_json

    write_json(Path(out_dir) / SETTINGS_FILE, settings.to_dict())


def read_settings(model_dir: str | Path) -> ModelSettings | None:
    """The checked `seqcls.json` of a trained directory, or None where there is none (any Hugging Face classifier)."""
    file = Path(model_dir) / SETTINGS_FILE
    if not file.is_file():
        return None
    try:
        saved = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{file}: unreadable ({e}); {RESTORE}") from None
    return ModelSettings.from_dict(saved, str(file))


def settings_from_config(config, where: str) -> ModelSettings:
    """Settings for a classifier directory without seqcls.json (any Hugging Face classifier): its config's labels,
    the default text column, no marker, the tokenizer's limit."""
    problem_type = getattr(config, "problem_type", None)
    if problem_type is None and config.num_labels == 1:
        problem_type = REGRESSION  # the transformers convention: one output without a problem type is regression
    return ModelSettings(label_space=label_space_from_config(config.id2label, problem_type), format=FORMAT,
                         source=where)


def trained_settings(model_dir: str | Path, trust_remote_code: bool = False,
                     key: str = "model directory") -> ModelSettings:
    """The settings of a trained classifier directory: its seqcls.json, else (any Hugging Face classifier) its
    config's label map; a base model without one is refused."""
    settings = read_settings(model_dir)
    if settings is not None:
        return settings
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_config_path(model_dir), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error("model", model_dir, e, "give the output_dir of a training run") from None
    if not getattr(config, "problem_type", None):
        raise UsageError(
            f"{key} {model_dir} has no label map (no problem_type in its config.json): it is a base model, not a "
            "trained classifier; give the output_dir of a training run, or train it first with --do_train --train_file"
        )
    return settings_from_config(config, str(Path(model_dir) / "config.json"))


def local_dir(name: str, token: str | None = None) -> Path:
    """A model directory on disk: the path itself, or a Hub id's snapshot (from the local cache when offline)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    from .modeling import check_model_source

    check_model_source(name)  # a path that does not exist: one clear line
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, token=token))
    except Exception as e:  # offline and not cached, gated, no such repository
        raise _load_error("model", name, e, "give a local model directory, or a Hub id reachable from here") from None


def write_adapter_config(model, out_dir: str | Path) -> None:
    """Write the classifier config (label maps, problem type, pad id) beside a LoRA adapter, for reloading."""
    from .outputs import atomic_open

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with atomic_open(Path(out_dir) / CLASSIFIER_CONFIG) as f:
        f.write(base.config.to_json_string())


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def is_trained_dir(path: str | Path) -> bool:
    """A directory written by a seqcls training run (or merge): it has seqcls.json."""
    return (Path(path) / SETTINGS_FILE).is_file()


def model_config_path(path: str | Path) -> str:
    """Where a trained model's config (labels, pad id) is: config.json, or classifier_config.json of an adapter."""
    return str(Path(path) / CLASSIFIER_CONFIG) if (Path(path) / CLASSIFIER_CONFIG).is_file() else str(path)


# ----------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class TrainedModel:
    """A loaded classifier: the model (adapters merged), its tokenizer as in training, and the settings."""

    model: Any
    tokenizer: Any
    settings: ModelSettings
    max_length: int


def load(model_dir: str | Path, *, device: "str | torch.device | None" = None, dtype: "torch.dtype | None" = None,
         attn_implementation: str | None = None, trust_remote_code: bool = False, token: str | None = None,
         max_length: int | None = None, base_model_name_or_path: str | None = None,
         use_safetensors: bool = True, key: str = "model directory", merge_adapter: bool = True) -> TrainedModel:
    """Load a trained directory for inference: a plain model directory, or a LoRA adapter directory merged into its
    base (`merge_adapter`; else the PeftModel, whose logits are bit-identical to training's); the tokenizer configured
    exactly as in training; the label space and settings checked against the model.

    `max_length` overrides the trained max_seq_length (default: the trained one)."""
    import torch

    from .modeling import check_model_source, max_length_for

    path = Path(model_dir)
    if not path.is_dir():
        raise UsageError(f"model directory {model_dir} does not exist; give the output_dir of a training run")
    adapter = is_adapter_dir(path)
    if not adapter and not (path / "config.json").is_file():
        unfinished = _unfinished_run(path)
        if unfinished is not None:
            raise _not_finished(key, path, unfinished, "no config.json yet")
        raise UsageError(f"{path} is not a model directory (no config.json); give the output_dir of a training run")
    check_model_source(str(path), use_safetensors, key=key)
    settings = read_settings(path)
    kwargs = {"dtype": dtype if dtype is not None else torch.float32, "trust_remote_code": trust_remote_code,
              "token": token}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tokenizer = load_tokenizer(path, settings, trust_remote_code=trust_remote_code, base=base_model_name_or_path)
        if adapter:
            model = _load_adapter(path, settings, tokenizer, kwargs, base_model_name_or_path, merge_adapter)
        else:
            model = _load_plain(path, kwargs, key)
    except UsageError as e:
        unfinished = _unfinished_run(path)
        if unfinished is None:
            raise
        raise _not_finished(key, path, unfinished, str(e).split("; ")[0]) from None  # without its generic hint
    if settings is None:
        settings = settings_from_config(model.config, str(path / "config.json"))
    _check_against_model(path, settings, model, tokenizer)
    if device is not None:
        model.to(device)
    requested = max_length if max_length is not None else settings.max_seq_length
    return TrainedModel(model.eval(), tokenizer, settings, max_length_for(tokenizer, model, requested))


def load_tokenizer(model_dir: str | Path, settings: ModelSettings | None, *, trust_remote_code: bool = False,
                   base: str | None = None):
    """The tokenizer saved with the model (an adapter dir without one: its base model's), configured as trained."""
    from transformers import AutoTokenizer

    path = Path(model_dir)
    has_own = any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))
    name = str(path) if has_own else (base or _adapter_base(path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as e:  # OSError, ValueError, tokenizers' own errors: all mean an unreadable directory
        raise _load_error("tokenizer in", name, e, "the directory needs tokenizer.json or the tokenizer files") from None
    if not getattr(tokenizer, "is_fast", False):
        logger.warning("%s: no fast tokenizer; tokenization will be slow", name)
    apply_settings(tokenizer, settings)
    return tokenizer


def apply_settings(tokenizer, settings: ModelSettings | None) -> None:
    """Configure a loaded tokenizer as training did: the pooling marker appended by its post-processor (directories
    of format 1 did not save it there), a pad token that is not the marker, sides and the trained max length."""
    from .modeling import append_pooling_token, has_pooling_token, set_pad_token, set_sides

    marker = settings.pooling_token if settings else None
    if marker is not None:
        if marker not in tokenizer.get_vocab():
            raise UsageError(f"{settings.source}: field 'pooling_token' {marker!r} is not in the saved tokenizer's "
                             f"vocabulary; {RESTORE}")
        if not has_pooling_token(tokenizer, marker):
            if settings.format >= 2:
                logger.warning("%s: the saved tokenizer does not append the pooling token %r itself (edited, or "
                               "rebuilt by its class on load); appending it as in training", settings.source, marker)
            append_pooling_token(tokenizer, marker)
    set_pad_token(tokenizer, avoid=marker)
    if settings is not None:
        set_sides(tokenizer, settings.padding_side, settings.truncation_side)
        if settings.max_seq_length is not None:
            tokenizer.model_max_length = settings.max_seq_length


def _load_error(what: str, name: str | Path, e: Exception, hint: str) -> UsageError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return UsageError(f"{what} {name} could not be loaded ({first}); {hint}")


def _load_plain(path: Path, kwargs: dict[str, Any], key: str):
    """AutoModelForSequenceClassification, refusing a directory whose classification head is not trained."""
    from transformers import AutoModelForSequenceClassification

    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(str(path), output_loading_info=True,
                                                                         use_safetensors=True if _has_safetensors(
                                                                             path) else None, **kwargs)
    except Exception as e:  # OSError, ValueError, safetensors errors: all mean an unreadable model directory
        raise _load_error("model", path, e, "check that training finished and the weights are complete") from None
    missing = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
    if missing:
        raise UsageError(
            f"{key} {path} has no trained classification head ({sorted(missing)[0]} is not in its weights), so its "
            "predictions would be random; give the output_dir of a training run, or train it first with --do_train"
        )
    return model


def _not_finished(key: str, path: Path, unfinished: str, failure: str) -> UsageError:
    return UsageError(f"{key} {path} is a training run that did not finish saving ({unfinished}): {failure}; rerun "
                      "the same training command with this output_dir to finish it, or give the output_dir of a "
                      "finished run")


def _unfinished_run(path: Path) -> str | None:
    """What in `path` shows a training run that has not finished writing it (its run identity not marked finished,
    or checkpoints of a run from before identities), or None. Asked only once loading has failed: a run killed after
    its final save but before its last bookkeeping still loads."""
    from .checkpoints import IDENTITY_FILE, checkpoints, read_identity

    record = read_identity(path)
    if record is not None:
        return None if record.get("finished") else f"its {IDENTITY_FILE} is not marked finished"
    found = checkpoints(path)
    return f"it still holds {found[0].name}" if found else None


def _has_safetensors(path: Path) -> bool:
    return any(path.glob("*.safetensors"))


def _adapter_base(path: Path) -> str:
    try:
        base = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path / ADAPTER_CONFIG}: unreadable or without base_model_name_or_path ({e}); re-save "
                         "the adapter") from None
    if not base:
        raise UsageError(f"{path / ADAPTER_CONFIG}: no base_model_name_or_path; set it to the base model's path")
    return base


def _load_adapter(path: Path, settings: ModelSettings | None, tokenizer, kwargs: dict[str, Any],
                  base: str | None, merge: bool = True):
    """A LoRA adapter directory: its base model with the adapter (and the trained head), merged in by default."""
    try:
        from peft import PeftModel
    except ImportError:
        raise UsageError(f"{path} holds a LoRA adapter ({ADAPTER_CONFIG}); loading it needs peft: pip install peft") from None
    from transformers import AutoConfig, AutoModelForSequenceClassification

    base = base or _adapter_base(path)
    own = next((path / f for f in (CLASSIFIER_CONFIG, "config.json") if (path / f).is_file()), None)
    try:
        config = AutoConfig.from_pretrained(str(own) if own else base, trust_remote_code=kwargs["trust_remote_code"])
    except Exception as e:
        raise _load_error("base model", base, e, f"fix base_model_name_or_path in {path / ADAPTER_CONFIG}") from None
    label_space = settings.label_space if settings else None
    if label_space is None:
        if own is None:
            raise UsageError(f"{path}: no label space ({SETTINGS_FILE} or {CLASSIFIER_CONFIG}); {RESTORE}")
        label_space = settings_from_config(config, str(own)).label_space
    config.num_labels = label_space.num_labels
    config.id2label, config.label2id = label_space.id2label, label_space.label2id
    config.problem_type = label_space.problem_type
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    try:
        with _transformers_quiet():  # its "score.weight MISSING" notice is expected: the adapter brings the head
            model, info = AutoModelForSequenceClassification.from_pretrained(base, config=config,
                                                                             output_loading_info=True, **kwargs)
        model = PeftModel.from_pretrained(model, str(path))
    except UsageError:
        raise
    except Exception as e:  # OSError, ValueError, safetensors and peft errors: an unreadable base or adapter
        raise _load_error("LoRA adapter", path, e, f"check the adapter files and its base model {base}, or give "
                                                   "the base model's path (--base_model_name_or_path)") from None
    # The head is new on the base model: it must come from the adapter (modules_to_save), or it stays random.
    saved = _adapter_keys(path)
    untrained = [k for k in info.get("missing_keys") or [] if saved is not None and not any(
        key.endswith("." + k) for key in saved)]
    if untrained:
        raise UsageError(f"{path}: the adapter does not hold the classification head ({', '.join(untrained)}); "
                         "train the adapter with the head in modules_to_save")
    return model.merge_and_unload() if merge else model


def _adapter_keys(path: Path) -> set[str] | None:
    file = path / "adapter_model.safetensors"
    if not file.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(file), "pt") as f:
        return set(f.keys())


@contextlib.contextmanager
def _transformers_quiet() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _check_against_model(path: Path, settings: ModelSettings, model, tokenizer) -> None:
    """The settings, the model's config and the tokenizer must describe the same classifier."""
    config = model.config
    if config.num_labels != settings.label_space.num_labels:
        raise UsageError(f"{settings.source}: field 'label_space' has {settings.label_space.num_labels} label(s) "
                         f"{list(settings.label_space.names)[:10]} but the model in {path} has {config.num_labels} "
                         f"outputs; {RESTORE}")
    # the head pools the last token that is not config.pad_token_id: it must be the tokenizer's pad token
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id
    limit = getattr(config, "max_position_embeddings", None)
    if settings.max_seq_length is not None and limit is not None and settings.max_seq_length > limit:
        raise UsageError(f"{settings.source}: field 'max_seq_length' {settings.max_seq_length} is beyond the model's "
                         f"{limit} positions; {RESTORE}")


# ----------------------------------------------------------------------------------------------------------
# Saving


def save(out_dir: str | Path, model, tokenizer, settings: ModelSettings, overwrite: bool = False,
         extra: dict[str, Path] | None = None, carry: tuple[str, ...] = ()) -> Path:
    """Write a plain model directory (weights, config, tokenizer as trained, seqcls.json, `extra` files copied
    under their names) whole or not at all: into a temporary directory beside it, renamed into place.

    `carry`: names of files an existing `out_dir` may already hold that move into the new one (the run's lock
    and identity, when a run writes its own output_dir)."""
    out = Path(out_dir)
    others = [p for p in out.iterdir() if p.name not in carry] if out.is_dir() else []
    if out.exists() and (not out.is_dir() or others) and not overwrite:
        raise UsageError(f"{out} exists and is not empty; choose another output directory or add --overwrite")
    from .outputs import atomic_dir

    with atomic_dir(out, carry) as tmp:
        model.save_pretrained(str(tmp))
        apply_settings(tokenizer, settings)
        tokenizer.save_pretrained(str(tmp))
        write_settings(tmp, settings)
        for name, source in (extra or {}).items():
            shutil.copy2(source, tmp / name)
    return out
