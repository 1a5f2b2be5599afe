"""Arguments: three dataclasses, a YAML/JSON config file and command-line overrides.

Names follow transformers' official `examples/pytorch/text-classification/run_classification.py`
wherever the concept exists there, so a command line that works with the official script works here.

    python run_classification.py configs/quickstart.yaml --learning_rate 1e-3

The config file (first positional argument) sets defaults; `--key value` after it overrides them.
Unknown keys, wrong types and impossible values are a `UsageError` naming the key and the file.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import transformers
import yaml

from .errors import UsageError
from .redaction import redact_options

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
logger = logging.getLogger("seqcls")

# Options of the official run_classification.py (or of older transformers) that cannot mean anything here:
# the reason and what to use instead. Every other official option is accepted with its meaning.
REFUSED = {
    "use_auth_token": "was replaced by --token in transformers; give --token or set HF_TOKEN",
    "evaluation_strategy": "was renamed --eval_strategy in transformers 4.41 and removed in 5; use --eval_strategy",
    "no_cuda": "was replaced by --use_cpu in transformers; use --use_cpu true",
    "use_mps_device": "was removed from transformers (Apple GPUs are used automatically); leave it out",
    "push_to_hub_token": "was removed from transformers; set HF_TOKEN (or `hf auth login`)",
    "per_gpu_train_batch_size": "was removed from transformers; use --per_device_train_batch_size",
    "per_gpu_eval_batch_size": "was removed from transformers; use --per_device_eval_batch_size",
    "fp16_backend": "was removed from transformers (amp is used); leave it out",
    "group_by_length": "is --train_sampling_strategy group_by_length in transformers 5",
    "logging_dir": "was removed from transformers 5; logs go to output_dir (TensorBoard: report_to tensorboard)",
    "task_name": "belongs to run_glue.py (GLUE tasks); give --train_file/--validation_file or --dataset_name",
}


EVAL_BATCH_SIZE = 32


@dataclass
class ModelArguments:
    """Which model and tokenizer to fine-tune, and how to load them."""

    model_name_or_path: str = field(
        metadata={"help": "A local model directory or a Hugging Face Hub id (e.g. Qwen/Qwen2.5-0.5B)."}
    )
    config_name: str | None = field(default=None, metadata={"help": "Config name or path, if not the model's."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer name or path, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to store models downloaded from the Hub."})
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "Use a fast (Rust) tokenizer."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the model."})
    token: str | None = field(
        default=None,
        metadata={"help": "Hub access token (or set HF_TOKEN). Never written to logs or outputs."},
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run modelling code from the model's repository. Only for repositories you trust."},
    )
    use_safetensors: bool = field(
        default=True,
        metadata={
            "help": "Load weights only from .safetensors files. false also allows PyTorch .bin files, which are "
            "pickles (read with torch.load(weights_only=True)): only for files you trust. Saving is always safetensors."
        },
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Load a checkpoint whose classification head has another number of labels."},
    )
    torch_dtype: str = field(
        default="auto",
        metadata={
            "help": "Weights dtype when loading: auto (bf16 under --bf16, fp16 under --fp16, else fp32), "
            "bfloat16, float16 or float32.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata={"help": "Attention kernel: sdpa, eager, flash_attention_2 (needs flash-attn), ..."},
    )
    padding_side: str | None = field(
        default=None,
        metadata={
            "help": "Pad on the left or right. Default: the tokenizer's own. The head reads the last real "
            "token either way.",
            "choices": ["left", "right"],
        },
    )
    pad_token: str | None = field(
        default=None,
        metadata={"help": "Pad token to use when the tokenizer has none (default: its eos token)."},
    )
    truncation_side: str | None = field(
        default=None,
        metadata={
            "help": "Cut long texts on the right (keep the start) or the left (keep the end). Default: the "
            "tokenizer's own (right).",
            "choices": ["left", "right"],
        },
    )
    append_eos: bool = field(
        default=False,
        metadata={
            "help": "Append the eos token to every text (after truncation, so it is never cut): the head then "
            "reads a fixed end-of-text marker. The pad token is switched to another existing special token."
        },
    )
    cls_token: str | None = field(
        default=None,
        metadata={"help": "Like append_eos, with this existing token as the end-of-text marker (no new embeddings)."},
    )
    head_init: str | None = field(
        default=None,
        metadata={
            "help": "label_words: start each row of the `score` head as the language-model output row (or tied input "
            "embedding) of its label word's first token, so with a prompt step 0 is the zero-shot prompt classifier. "
            "Decoder LLMs only.",
            "choices": ["label_words"],
        },
    )
    label_words: list[str] | None = field(
        default=None,
        metadata={
            "help": "With head_init label_words: LABEL=WORD pairs (YAML: a mapping); default: each label's own name. "
            "A word of several tokens uses its first token.",
            "nargs": "+",
        },
    )
    # LoRA / QLoRA
    use_lora: bool = field(
        default=False,
        metadata={"help": "Train LoRA adapters (PEFT) and the classification head instead of every weight."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=32, metadata={"help": "LoRA scaling numerator (the update is alpha/r x BA)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Modules that get LoRA adapters (names or suffixes such as q_proj v_proj, or all-linear). "
            "Default: every linear layer of the transformer blocks (not embeddings, not the head).",
            "nargs": "+",
        },
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={
            "help": "QLoRA: load the base weights in 4-bit NF4 through bitsandbytes (CUDA GPU only), compute in "
            "bf16, head unquantized. Needs use_lora."
        },
    )


@dataclass
class DataTrainingArguments:
    """What data to train and evaluate on, and how to turn it into model inputs."""

    dataset_name: str | None = field(default=None, metadata={"help": "A dataset on the Hugging Face Hub."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_file: str | None = field(default=None, metadata={"help": "Training data: .jsonl, .json, .csv or .parquet."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation data, same formats."})
    test_file: str | None = field(default=None, metadata={"help": "Test data to predict on, same formats."})
    train_split_name: str | None = field(
        default=None, metadata={"help": "The --dataset_name split to train on. Default: train."})
    validation_split_name: str | None = field(
        default=None, metadata={"help": "The --dataset_name split to evaluate on. Default: validation."})
    test_split_name: str | None = field(
        default=None, metadata={"help": "The --dataset_name split to predict on. Default: test."})
    remove_splits: str | None = field(
        default=None,
        metadata={"help": "Splits of --dataset_name to drop, separated by commas (e.g. unused). Splits other than "
                          "train/validation/test (or the *_split_name ones) are never used anyway."},
    )
    remove_columns: str | None = field(
        default=None,
        metadata={"help": "Columns to drop from every split, separated by commas (only columns that no option "
                          "names: columns not named as text, label or id are never read anyway)."},
    )
    validation_split_percentage: float | None = field(
        default=None,
        metadata={
            "help": "Without a validation split, hold out this percentage of train (stratified for single-label, "
            "deterministic for a given --seed). Default: 10 when evaluation is on and no validation data is given."
        },
    )
    text_column_names: str = field(
        default="text",
        metadata={"help": "Text column, or several separated by commas (joined with --text_column_delimiter). "
                          "Default: text (the official script's: sentence).",
                  "aliases": ["--text_column_name"]},  # the official README's spelling (an argparse abbreviation)
    )
    text_column_delimiter: str = field(default=" ", metadata={"help": "Joins several text columns."})
    text_pair_column_name: str | None = field(
        default=None, metadata={"help": "Column passed to the tokenizer as the second sequence (sentence pairs)."}
    )
    label_column_name: str = field(default="label", metadata={"help": "The label column."})
    prompt_template: str | None = field(
        default=None,
        metadata={"help": "Wrap every text, e.g. \"评论：{text}\\n情感：\": {text} (the joined text columns), "
                          "{text_pair}, or any {column}. Only the text is cut to max_seq_length, never the template."},
    )
    use_chat_template: bool = field(
        default=False,
        metadata={"help": "Send the (templated) text as the user turn of the tokenizer's chat template, with the "
                          "generation prompt, so the head reads where the answer would start."},
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "With use_chat_template: a system turn before the user turn."}
    )
    class_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "Label names in id order 0..n-1 (e.g. 积极 消极 中立). Default: the sorted names found in train. "
            "(Not `label_names`: transformers uses that name for the input keys holding the labels.)",
            "nargs": "+",
        },
    )
    problem_type: str | None = field(
        default=None,
        metadata={
            "help": "Default: inferred from train labels (list -> multi-label, float -> regression, else single).",
            "choices": ["single_label_classification", "multi_label_classification", "regression"],
        },
    )
    do_regression: bool | None = field(
        default=None, metadata={"help": "Official-script alias: true forces regression (one output)."}
    )
    id_column: str | None = field(
        default=None, metadata={"help": "Column copied into predict_results.jsonl as `id` (default: the row index)."}
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={"help": "Truncate longer inputs to this many tokens. Default: the tokenizer's limit, at most 2048."},
    )
    pad_to_max_length: bool = field(
        default=False,
        metadata={"help": "Pad every input to max_seq_length (the official script's static padding; slower)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N train rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N validation rows."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N test rows."})
    shuffle_train_dataset: bool = field(default=False, metadata={"help": "Shuffle train rows before cutting them."})
    shuffle_seed: int = field(default=42, metadata={"help": "Seed of --shuffle_train_dataset."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenize instead of using the cache."})
    metric_name: str | None = field(
        default=None,
        metadata={"help": "A metric to report besides the built-in ones. Built-in, no download: accuracy, f1 (micro "
                          "for multi-label, binary for two classes, as the official script), macro_f1, weighted_f1, "
                          "micro_f1, subset_accuracy, mse, mae, pearson(r), spearman(r). Any other name is an "
                          "`evaluate` metric (needs the evaluate package and the metric offline; checked at start)."},
    )


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """transformers.TrainingArguments, plus what a classification run needs."""

    logging_steps: float = field(
        default=0.02,
        metadata={"help": "Log the training loss every N steps, or every this fraction of the run when below 1. "
                          "Default 0.02: about 50 points a run, however short (transformers' default: 500)."},
    )
    per_device_eval_batch_size: int = field(
        default=EVAL_BATCH_SIZE,
        metadata={"help": f"Rows per evaluation/prediction batch on each device. Default {EVAL_BATCH_SIZE} "
                          "(transformers': 8): rows are sorted by length, so bigger batches waste little padding; "
                          "see benchmarks/RESULTS.md."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh in an output_dir that already holds a finished run or checkpoints."},
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 mixed precision. Default: on when training on a CUDA GPU that supports it (and fp16 is "
            "off), else off.",
            "nargs": "?",
            "const": True,  # a bare --bf16 means true, as before
        },
    )
    class_weights: list[str] | None = field(
        default=None,
        metadata={
            "help": "Class imbalance: `auto` (inverse class frequency in train: N / (num_labels x count)) or one "
            "weight per label in label order. Single-label: cross-entropy class weights; multi-label: BCE "
            "positive-class weights (auto: negatives / positives per label).",
            "nargs": "+",
        },
    )
    focal_gamma: float = field(
        default=0.0,
        metadata={"help": "Focal loss exponent: each term is scaled by (1 - p_true)^gamma (0: plain; 2 is usual)."},
    )
    tune_thresholds: bool = field(
        default=False,
        metadata={
            "help": "Multi-label: after training, pick each label's threshold on the validation set to maximise its "
            "F1; saved with the model (seqcls.json) and used by evaluation and prediction."
        },
    )
    calibration: str = field(
        default="none",
        metadata={
            "help": "temperature: after training (before tune_thresholds), fit a temperature (one per label for "
            "multi-label) on the validation set and fold it into the head, so every consumer gets calibrated "
            "probabilities; recorded in seqcls.json. An evaluate-only run from a trained dir with --output_dir "
            "NEW recalibrates it on --validation_file and saves the model there. none: the raw probabilities.",
            "choices": ["none", "temperature"],
        },
    )
    # --- Throughput (benchmarks/RESULTS.md, "Training speed") ---
    train_sampling_strategy: str = field(
        default="random",
        metadata={
            "help": "Order of training rows: random (default, as transformers; packing removes the padding without "
            "grouping), group_by_length (batches of similar length: little padding without packing, but less random "
            "batches, measured 1.9 points of macro-F1 lower in benchmarks/RESULTS.md; evaluation order is kept), "
            "sequential, or batch_rebalance.",
            "choices": ["random", "sequential", "group_by_length", "batch_rebalance"],
        },
    )
    sort_eval_by_length: bool = field(
        default=True,
        metadata={"help": "Evaluate and predict in batches of rows sorted by length (results stay in input order)."},
    )
    max_tokens_per_batch: str = field(
        default="off",
        metadata={
            "help": "Token budget per training batch instead of per_device_train_batch_size rows: packed batches of "
            "random rows hold about this many tokens; padded length-grouped batches keep rows x longest row within "
            "it. Short texts then make big batches (fewer, fuller steps: faster, but not the same optimisation as "
            "fixed rows, so learning rate and steps may need retuning) and long texts small ones (bounded memory). "
            "off (default): per_device_train_batch_size rows; auto: per_device_train_batch_size rows of the "
            "95th-percentile training length; or a number of tokens."
        },
    )
    packing: str = field(
        default="auto",
        metadata={
            "help": "Padding-free training: several examples per row, kept apart through position_ids (flash "
            "attention's variable-length kernel; a block-diagonal mask under sdpa/eager), the head read at each "
            "example's last token. auto (default): on when the model gives the same logits packed as alone "
            "(checked at start-up on a few rows); true: the same check, an error if it fails; false: off."
        },
    )
    freeze_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Do not train the input embedding matrix: saves its gradient and optimizer state (27%% of "
            "Qwen2.5-0.5B's parameters)."
        },
    )

    embedding_update: str = field(
        default="auto",
        metadata={
            "help": "How the input embedding is trained. sparse: gradients and AdamW steps only for the rows the "
            "data has touched, exactly the dense result (weight decay 0, torch AdamW, one process or DDP; not "
            "FSDP/DeepSpeed); auto "
            "(default): sparse where it is exact, else dense (the log says why); dense: every row every step.",
            "choices": ["auto", "sparse", "dense"],
        },
    )

    def __post_init__(self) -> None:
        if self.bf16 is None:
            self.bf16 = default_bf16(self.use_cpu, self.fp16)
        # transformers fills in metric_for_best_model="loss" under load_best_model_at_end; remember whether the
        # user chose one, so the recipe can default to the metric that suits the problem type instead
        self.metric_for_best_model_given = self.metric_for_best_model is not None
        super().__post_init__()


def default_bf16(use_cpu: bool, fp16: bool) -> bool:
    """bf16 by default where it is fast and safe: a CUDA GPU with bf16 support, and fp16 not asked for."""
    import torch

    return bool(not use_cpu and not fp16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported())


DATACLASSES = (ModelArguments, DataTrainingArguments, TrainingArguments)


# --help: the recipe's own options first, by section, then the Trainer's (transformers.TrainingArguments)
SECTIONS = {
    "Model": ["model_name_or_path", "config_name", "tokenizer_name", "cache_dir", "use_fast_tokenizer",
              "model_revision", "token", "trust_remote_code", "use_safetensors", "ignore_mismatched_sizes",
              "torch_dtype", "attn_implementation", "padding_side", "pad_token", "truncation_side", "append_eos",
              "cls_token", "head_init", "label_words"],
    "Data": ["train_file", "validation_file", "test_file", "dataset_name", "dataset_config_name", "train_split_name",
             "validation_split_name", "test_split_name", "remove_splits", "remove_columns",
             "validation_split_percentage", "text_column_names", "text_column_delimiter", "text_pair_column_name",
             "id_column", "max_seq_length", "pad_to_max_length", "max_train_samples", "max_eval_samples",
             "max_predict_samples", "shuffle_train_dataset", "shuffle_seed", "preprocessing_num_workers",
             "overwrite_cache", "prompt_template", "use_chat_template", "system_prompt"],
    "Labels, loss and metrics": ["label_column_name", "class_names", "problem_type", "do_regression", "class_weights",
                                 "focal_gamma", "tune_thresholds", "calibration", "metric_name"],
    "Speed": ["train_sampling_strategy", "sort_eval_by_length", "max_tokens_per_batch", "packing",
              "embedding_update", "freeze_embeddings", "bf16", "per_device_eval_batch_size"],
    "LoRA / QLoRA": ["use_lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "load_in_4bit"],
    "Outputs": ["output_dir", "overwrite_output_dir", "logging_steps"],
}
USAGE = ("run_classification.py [CONFIG.yaml] --model_name_or_path MODEL --output_dir DIR [--train_file FILE] "
         "[--do_train] [--do_eval] [--do_predict] [--option VALUE ...]")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """One name per option (not --learning_rate and --learning-rate), its value's form once, the default after."""

    def __init__(self, prog: str) -> None:
        import shutil

        super().__init__(prog, max_help_position=34, width=min(shutil.get_terminal_size().columns, 120))

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.dest == "help":
            return super()._format_action_invocation(action)
        name = action.option_strings[0]
        if action.nargs == 0:
            return name
        if action.choices is not None and len(action.choices) <= 8:
            value = "{" + ",".join(str(c) for c in action.choices) + "}"
        else:
            kind = getattr(action.type, "__name__", "")
            value = {"str": "TEXT", "int": "INT", "float": "NUMBER", "string_to_bool": "BOOL"}.get(kind, "VALUE")
        if action.nargs in ("+", "*"):
            value += " ..."
        elif action.nargs == "?":
            value = f"[{value}]"
        return f"{name} {value}"

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in text or "Default" in text:
            return text
        if isinstance(action, argparse._StoreFalseAction):
            return text
        return f"{text} (default: %(default)s)"


class ArgumentParser(transformers.HfArgumentParser):
    """HfArgumentParser whose errors are `UsageError`s (one line, exit 2) instead of argparse's usage dump, without
    abbreviations (`--max_seq_len` is not silently `--max_seq_length`), and with a --help grouped by section."""

    def __init__(self, dataclass_types=DATACLASSES, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("usage", USAGE)
        kwargs.setdefault("description", "Fine-tune a decoder LLM as a text classifier. A YAML/JSON config file "
                                         "(first argument) sets options; --option value after it overrides them.")
        kwargs.setdefault("epilog", "README.md explains the options and their defaults. --debug shows the traceback of "
                                    "an error instead of its one line (or set SEQCLS_DEBUG=1).")
        super().__init__(dataclass_types, **kwargs)
        self._group_by_section()

    def _group_by_section(self) -> None:
        by_dest: dict[str, list[argparse.Action]] = {}
        for action in self._actions:
            by_dest.setdefault(action.dest, []).append(action)
        default_group = self._optionals
        for actions in by_dest.values():  # --no_x: one line for x says it
            for negation in (a for a in actions[1:] if isinstance(a, argparse._StoreFalseAction)):
                negation.help = argparse.SUPPRESS
                actions[0].help = f"{actions[0].help or ''} {negation.option_strings[0]} sets it false.".strip()
        groups = []
        placed = {"help"}
        for title, dests in SECTIONS.items():
            group = argparse._ArgumentGroup(self, title)
            for dest in dests:
                for action in by_dest.get(dest, []):
                    group._group_actions.append(action)
                    placed.add(dest)
            groups.append(group)
        trainer = argparse._ArgumentGroup(self, "Trainer options (transformers.TrainingArguments)")
        trainer._group_actions = [a for a in default_group._group_actions if a.dest not in placed]
        default_group._group_actions = [a for a in default_group._group_actions if a.dest == "help"]
        self._action_groups = [default_group, *groups, trainer]

    def error(self, message: str) -> None:  # argparse calls this for every command-line mistake
        message = re.sub(r"(--\w+)/--[\w-]+", r"\1", message)  # "--learning_rate/--learning-rate": name it once
        raise UsageError(f"command line: {message} (see --help)")


def make_parser(dataclass_types=DATACLASSES) -> ArgumentParser:
    return ArgumentParser(dataclass_types)


def nearest(name: str, known) -> str:
    """ ' (did you mean --x?)' for the closest known option name, or '' (difflib, as git and pip do)."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean --{match[0]}?)" if match else ""


def refuse_or_suggest(name: str, known, where: str) -> UsageError:
    """The error for an unknown option `name` (without dashes)."""
    key = name.replace("-", "_")
    if key in REFUSED:
        return UsageError(f"{where}: --{name} {REFUSED[key]}")
    return UsageError(f"{where}: unknown option --{name}{nearest(key, known)} (see --help)")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (PyYAML keeps the last one silently, so an
    edited config would train with whichever value happens to come second)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                if isinstance(key, str) and key in seen:
                    raise _DuplicateConfigKey(key, seen[key], line)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateConfigKey(Exception):
    def __init__(self, key: str, first: int | None, line: int | None) -> None:
        super().__init__(key, first, line)
        self.key, self.first, self.line = key, first, line


def _unique_json_keys(pairs: list[tuple[str, Any]]) -> dict:
    row = dict(pairs)
    if len(row) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateConfigKey(next(k for k, _ in pairs if k in seen or seen.add(k)), None, None)
    return row


def read_config_file(path: str) -> dict[str, Any]:
    """Read a flat YAML or JSON config file (YAML with a safe loader); a key given twice is an error."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {path} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        data = (json.loads(text, object_pairs_hook=_unique_json_keys) if p.suffix == ".json"
                else yaml.load(text, Loader=_UniqueKeyLoader))  # noqa: S506 - a SafeLoader subclass
    except _DuplicateConfigKey as e:
        at = f":{e.line}" if e.line else ""
        first = f" (first on line {e.first})" if e.first else ""
        raise UsageError(f"{path}{at}: key {e.key} is given twice{first}; keep one of them") from None
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else (f":{e.lineno}" if hasattr(e, "lineno") else "")
        raise UsageError(f"{path}{line}: not valid {p.suffix[1:].upper()}: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of option: value, got a {type(data).__name__}")
    return data


def _coerce(action: argparse.Action, key: str, value: Any, where: str) -> Any:
    """Convert a config value the way argparse converts the same text on the command line.

    YAML reads `5e-4` as a string and `1e3` as a string too; argparse's `type` turns them into numbers.
    """
    if value is None:
        return None
    convert = action.type if callable(action.type) else None
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        return [_coerce_one(convert, action, key, v, where) for v in items]
    if isinstance(value, (list, dict)):
        switch = getattr(convert, "__name__", "") == "string_to_bool"
        if convert in (int, float) or switch or action.choices is not None:
            kind = {int: "a whole number", float: "a number"}.get(convert, "true or false" if switch else "one value")
            raise UsageError(f"{where}: {key}: expected {kind}, got a {'list' if isinstance(value, list) else 'mapping'}"
                             f" {value!r}; give one value (a sweep over values is seqcls-sweep's job)")
        # nested values (e.g. fsdp_config, deepspeed as a dict) go through unchanged
        return value
    return _coerce_one(convert, action, key, value, where)


def _coerce_one(convert, action: argparse.Action, key: str, value: Any, where: str) -> Any:
    if convert is not None and isinstance(value, str):
        try:
            value = convert(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            kind = getattr(convert, "__name__", "value")
            example = {"float": "; write a number such as 2e-5", "int": "; write a whole number such as 8"}
            raise UsageError(f"{where}: {key}: {value!r} is not a valid {kind}{example.get(kind, '')}") from None
    elif convert in (int, float) and isinstance(value, bool):
        raise UsageError(f"{where}: {key}: expected a number, got {value!r}")
    elif convert is float and isinstance(value, int):
        value = float(value)
    elif convert is int and isinstance(value, float):
        if not value.is_integer():
            raise UsageError(f"{where}: {key}: expected a whole number, got {value!r}")
        value = int(value)
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(str(c) for c in action.choices)
        raise UsageError(f"{where}: {key}: {value!r} is not one of: {choices}")
    return value


def parse_args(argv: list[str] | None = None, dataclass_types=DATACLASSES) -> tuple:
    """Parse `[CONFIG_FILE] [--key value ...]` into the dataclasses (ModelArguments, DataTrainingArguments,
    TrainingArguments). A `UsageError` explains any mistake."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser(dataclass_types)
    actions = {a.dest: a for a in parser._actions}
    known = [d for d in actions if d != "help"]
    config: dict[str, Any] = {}
    config_path: str | None = None
    given: set[str] = set()  # the options the user set (file or command line), to tell them from defaults
    if argv and not argv[0].startswith("-"):
        if not argv[0].endswith(CONFIG_SUFFIXES):
            raise UsageError(
                f"command line: {argv[0]!r}: the first argument must be a config file ({', '.join(CONFIG_SUFFIXES)}) "
                "or an option such as --model_name_or_path"
            )
        config_path = argv.pop(0)
        config = read_config_file(config_path)
        unknown = sorted(k for k in config if k not in actions or k == "help")
        refused = [k for k in unknown if k in REFUSED]
        if refused:
            raise UsageError(f"{config_path}: {refused[0]} {REFUSED[refused[0]]}")
        if unknown:
            listed = ", ".join(k + nearest(k, known).replace("--", "") for k in unknown)
            raise UsageError(
                f"{config_path}: unknown key(s): {listed} (see `python run_classification.py --help` for the options)"
            )
        defaults = {k: _coerce(actions[k], k, v, config_path) for k, v in config.items()}
        parser.set_defaults(**defaults)
        for key in defaults:
            # a required option set in the file is no longer required on the command line
            actions[key].required = False
        given.update(defaults)
    for token in argv:
        if token.startswith("--"):
            action = parser._option_string_actions.get(token.split("=", 1)[0])
            if action is not None:
                given.add(action.dest)
    try:
        *outputs, remaining = parser.parse_args_into_dataclasses(
            args=argv, return_remaining_strings=True, look_for_args_file=False
        )
    except ValueError as e:
        # __post_init__ checks of TrainingArguments (e.g. load_best_model_at_end without matching strategies)
        raise UsageError(f"invalid arguments: {str(e).strip().splitlines()[0]}") from None
    if remaining:
        options = [r for r in remaining if r.startswith("-")]
        if options:
            raise refuse_or_suggest(options[0].lstrip("-").split("=", 1)[0], known, "command line")
        raise UsageError(f"command line: unexpected value(s) {' '.join(remaining)}: each option takes one value "
                         "unless its --help says more (see --help)")
    validate(*outputs, given=given)
    record_given(outputs[-1], config_path, given)
    return tuple(outputs)


@dataclass(frozen=True)
class GivenOptions:
    """What the user set, as the parser read it (the config file, and the options given in it or on the command
    line), to tell them from defaults: the report's resolved config comes from it, argv is not parsed again."""

    config_file: str | None = None
    keys: frozenset[str] = frozenset()


def record_given(training_args: "TrainingArguments", config_file: str | None, given: set[str]) -> None:
    """Keep the parser's knowledge on the TrainingArguments it built, as `training_args.given_options` (not a
    dataclass field: not an option, not in run_args.json)."""
    training_args.given_options = GivenOptions(config_file, frozenset(given))


def validate(model_args: ModelArguments, data_args: DataTrainingArguments, training_args: TrainingArguments,
             given: set[str] | None = None) -> None:
    """Checks that transformers does not make, each a one-line UsageError; `given`: the options the user set."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(training_args, name) < 1:
            raise UsageError(f"{name} must be at least 1, got {getattr(training_args, name)}; give a whole number "
                             "of 1 or more")
    if training_args.learning_rate < 0:
        raise UsageError(f"learning_rate must not be negative, got {training_args.learning_rate}")
    if training_args.hub_token:
        # the Trainer pickles its arguments into every checkpoint's training_args.bin, hub_token included
        raise UsageError("hub_token would be saved in every checkpoint's training_args.bin; give the token in the "
                         "HF_TOKEN environment variable (or `hf auth login`) instead")
    if data_args.max_seq_length is not None and data_args.max_seq_length < 1:
        raise UsageError(f"max_seq_length must be at least 1, got {data_args.max_seq_length}")
    for name in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
        if getattr(data_args, name) is not None and getattr(data_args, name) < 1:
            raise UsageError(f"{name} must be at least 1, got {getattr(data_args, name)}; leave it out to use "
                             "every row")
    if data_args.validation_split_percentage is not None and not 0 < data_args.validation_split_percentage < 100:
        raise UsageError(
            f"validation_split_percentage must be between 0 and 100, got {data_args.validation_split_percentage}"
        )
    if data_args.dataset_name is None and not (data_args.train_file or data_args.validation_file or data_args.test_file):
        raise UsageError("no data: give --train_file (and --validation_file/--test_file) or --dataset_name")
    if training_args.do_train and data_args.dataset_name is None and not data_args.train_file:
        raise UsageError("--do_train needs --train_file (or --dataset_name)")
    if training_args.label_names not in (None, ["labels"]):
        raise UsageError(
            f"label_names {training_args.label_names} is transformers' option for the input keys holding labels; "
            "to set the label order use class_names"
        )
    budget = training_args.max_tokens_per_batch = token_budget_setting(training_args.max_tokens_per_batch)
    if isinstance(budget, int):
        if getattr(training_args.accelerator_config, "split_batches", False):
            raise UsageError("max_tokens_per_batch makes batches of varying size, which accelerator_config "
                             "split_batches cannot split; set max_tokens_per_batch off")
    packing = training_args.packing = switch_setting("packing", training_args.packing)
    if packing is True and data_args.pad_to_max_length:
        raise UsageError("packing and pad_to_max_length true contradict each other (packing removes padding); "
                         "set pad_to_max_length false")
    if data_args.do_regression and data_args.problem_type not in (None, "regression"):
        raise UsageError(f"do_regression true contradicts problem_type {data_args.problem_type}")
    validate_finetuning(model_args, data_args, training_args)
    check_combinations(model_args, data_args, training_args, given or set())
    check_metric_name(data_args.metric_name)
    out = Path(training_args.output_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output_dir {out} is a file; choose a directory path")
    check_writable(out)


def check_combinations(model_args: ModelArguments, data_args: DataTrainingArguments,
                       training_args: TrainingArguments, given: set[str]) -> None:
    """Options that would do nothing in the combination given: an error where the user surely meant something
    else, a warning where a config file may reasonably carry them."""
    local = bool(data_args.train_file or data_args.validation_file or data_args.test_file)
    if data_args.dataset_name and local:
        raise UsageError("give either --dataset_name or --train_file/--validation_file/--test_file, not both")
    hub_only = ["dataset_config_name", "train_split_name", "validation_split_name", "test_split_name",
                "remove_splits"]
    for name in hub_only:
        if getattr(data_args, name) is not None and not data_args.dataset_name:
            files = "local files are their own splits: --train_file, --validation_file, --test_file"
            raise UsageError(f"--{name} applies to --dataset_name only; {files} (remove --{name})")
    if data_args.validation_file and data_args.validation_split_percentage is not None:
        raise UsageError("--validation_split_percentage holds out part of train only without --validation_file; "
                         "remove one of them")
    if data_args.label_column_name in text_columns(data_args):
        raise UsageError(f"label_column_name {data_args.label_column_name!r} is also a text column (text_column_names"
                         " / text_pair_column_name): the model would read its own label; name the column that holds "
                         "the labels")
    used = {*text_columns(data_args), data_args.label_column_name, data_args.id_column}
    for column in split_list(data_args.remove_columns):
        if column in used:
            raise UsageError(f"--remove_columns {column}: that column is used (text, label or id column); "
                             "remove it from --remove_columns")
    warnings = []
    if "text_column_delimiter" in given and len(text_columns(data_args)) < 2:
        warnings.append("text_column_delimiter joins several text columns; with one column it does nothing")
    if "shuffle_seed" in given and not data_args.shuffle_train_dataset:
        warnings.append("shuffle_seed does nothing without --shuffle_train_dataset")
    if data_args.test_file and not training_args.do_predict:
        warnings.append(f"test_file {data_args.test_file} is not read without --do_predict")
    if data_args.max_predict_samples is not None and not training_args.do_predict:
        warnings.append("max_predict_samples does nothing without --do_predict")
    if data_args.max_train_samples is not None and not training_args.do_train:
        warnings.append("max_train_samples does nothing without --do_train")
    lora = sorted(n for n in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules") if n in given)
    if lora and not model_args.use_lora:
        warnings.append(f"{', '.join(lora)} do(es) nothing without --use_lora true")
    if "per_device_train_batch_size" in given and training_args.max_tokens_per_batch not in ("off", None) \
            and str(training_args.max_tokens_per_batch) != "auto":
        warnings.append("per_device_train_batch_size does nothing under a max_tokens_per_batch number")
    for text in warnings:
        logger.warning("option ignored: %s", text)


def text_columns(data_args: DataTrainingArguments) -> list[str]:
    """The text column names as a list (the option is one comma-separated string, or a list in a config)."""
    names = data_args.text_column_names
    return [c.strip() for c in (names if isinstance(names, list) else str(names).split(",")) if c.strip()] + (
        [data_args.text_pair_column_name] if data_args.text_pair_column_name else [])


def split_list(value: str | list[str] | None) -> list[str]:
    """A comma-separated option (remove_splits, remove_columns) as a list."""
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [v.strip() for v in items if str(v).strip()]


def check_metric_name(metric_name: str | None) -> None:
    """A built-in metric needs nothing; another name must load from `evaluate` now, before data or model."""
    from .metrics import is_builtin_metric, load_extra_metric

    if metric_name and not is_builtin_metric(metric_name):
        load_extra_metric(metric_name)


def check_writable(out: Path) -> None:
    """Fail now, not after hours of training, when output_dir cannot be written (it is not created here)."""
    import tempfile

    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"output_dir {out}: {existing} is a file, not a directory; choose another output_dir")
    try:  # os.access alone says yes to root on a read-only mount
        os.rmdir(tempfile.mkdtemp(prefix=".seqcls-write-test-", dir=existing))
    except OSError as e:
        raise UsageError(
            f"output_dir {out} is not writable ({e.strerror} in {existing}); choose a directory you can write to, "
            "or fix its permissions"
        ) from None


def validate_finetuning(model_args: ModelArguments, data_args: DataTrainingArguments,
                        training_args: TrainingArguments) -> None:
    """Checks of the LoRA, loss, threshold and pooling-token options (those that need no data or model)."""
    if model_args.load_in_4bit and not model_args.use_lora:
        raise UsageError("load_in_4bit needs use_lora true: 4-bit weights cannot be trained directly (QLoRA trains "
                         "LoRA adapters on top of them)")
    if model_args.load_in_4bit and training_args.fp16:
        raise UsageError("load_in_4bit computes in bf16; remove fp16 (use bf16 true)")
    if model_args.load_in_4bit and model_args.torch_dtype not in ("auto", "bfloat16"):
        raise UsageError(f"load_in_4bit keeps the unquantized weights in bfloat16; torch_dtype "
                         f"{model_args.torch_dtype} is not supported with it: use auto")
    if model_args.use_lora:
        if model_args.lora_r < 1:
            raise UsageError(f"lora_r must be at least 1, got {model_args.lora_r}")
        if not 0 <= model_args.lora_dropout < 1:
            raise UsageError(f"lora_dropout must be in [0, 1), got {model_args.lora_dropout}")
    if model_args.label_words and model_args.head_init != "label_words":
        raise UsageError("label_words is given but head_init is not label_words; add --head_init label_words")
    if model_args.append_eos and model_args.cls_token:
        raise UsageError("give either append_eos or cls_token, not both (cls_token names the marker to append)")
    if training_args.focal_gamma < 0:
        raise UsageError(f"focal_gamma must not be negative, got {training_args.focal_gamma}")
    if not 0 <= training_args.label_smoothing_factor < 1:
        raise UsageError(f"label_smoothing_factor must be in [0, 1), got {training_args.label_smoothing_factor}")
    if training_args.tune_thresholds and not training_args.do_train:
        raise UsageError("tune_thresholds runs after training: add --do_train (and validation data)")
    weights = training_args.class_weights
    if weights is not None and weights != ["auto"]:
        try:
            values = [float(w) for w in weights]
        except ValueError:
            raise UsageError(f"class_weights must be `auto` or one number per label, got {' '.join(weights)}") from None
        if any(not (v >= 0 and v < float("inf")) for v in values) or not any(v > 0 for v in values):
            raise UsageError(f"class_weights must be finite, non-negative and not all zero, got {' '.join(weights)}")


def switch_setting(name: str, value: Any) -> str | bool:
    """An on/off/auto option as "auto", True or False (YAML gives booleans, the command line strings)."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise UsageError(f"{name} {value!r}: give auto, true or false")


def token_budget_setting(value: Any) -> str | int:
    """`max_tokens_per_batch` as "auto", "off" or a positive number of tokens."""
    text = str(value).strip().lower()
    if text in ("auto", "off"):
        return text
    if text in ("none", "false", "0"):
        return "off"
    try:
        number = int(text)
    except ValueError:
        raise UsageError(f"max_tokens_per_batch {value!r}: give auto, off or a number of tokens") from None
    if number < 1:
        raise UsageError(f"max_tokens_per_batch must be at least 1 (or off), got {number}")
    return number


def with_resolved(training_args: TrainingArguments, **values: Any) -> TrainingArguments:
    """A copy of the parsed TrainingArguments with `values`, the options decided once the data or the model is known
    (the best-model metric of the problem type, packing auto, max_tokens_per_batch auto); the parsed object stays as
    given. A shallow copy, not dataclasses.replace: that would rerun __post_init__ (device set-up, transformers'
    metric_for_best_model "loss" default) and drop what the parser kept on the object (given_options)."""
    import copy

    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(training_args)})
    if unknown:
        raise AttributeError(f"not TrainingArguments fields: {unknown}")  # a bug of ours, not the user's
    resolved = copy.copy(training_args)
    for key, value in values.items():
        setattr(resolved, key, value)
    return resolved


def to_loggable_dict(*args_objects) -> dict[str, Any]:
    """All arguments as one flat dict, with secrets removed: safe to log and to save with the model."""
    flat: dict[str, Any] = {}
    for obj in args_objects:
        d = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
        flat.update(d)
    return redact_options(flat)


def hf_token(model_args: ModelArguments) -> str | None:
    """The access token: --token, else HF_TOKEN from the environment (transformers reads it too)."""
    return model_args.token or os.environ.get("HF_TOKEN") or None
