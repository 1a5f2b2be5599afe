"""Tokenizer and model loading: the pad-token policy for decoder LLMs, the pooling token, dtype and the fp32 head,
attention kernel, label maps, the model's preparation for training (vocabulary check, precision, frozen embeddings,
label-word head init). LoRA / QLoRA live in seqcls/lora.py."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .errors import UsageError
from .labels import REGRESSION, LabelSpace

logger = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _load_error(what: str, name: str, e: Exception) -> UsageError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    hint = "give a local directory with config.json, or a Hub id reachable from here"
    if not Path(name).exists() and "/" not in name:
        hint = "check the path"
    elif "safetensors" in first:
        hint = "convert its weights to safetensors, or pass --use_safetensors false if you trust its .bin files"
    return UsageError(f"{what} {name!r} could not be loaded ({first}); {hint}")


PICKLE_WEIGHTS = ("pytorch_model*.bin", "adapter_model.bin", "*.pt", "*.pth", "*.ckpt")


def _looks_local(name: str) -> bool:
    """A path rather than a Hub id (`org/name` has exactly one slash and no leading `/`, `.` or `~`; `models/x`
    where `models/` is a local folder is a path too)."""
    return (name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
            or ("/" in name and Path(name).parent.is_dir()))


def check_model_source(name: str, use_safetensors: bool = True, key: str = "model_name_or_path") -> None:
    """Before anything loads: a local model directory exists, a LoRA adapter's base model is there, and the weights
    are safetensors (pickle files can run code when loaded) unless the user allows otherwise."""
    path = Path(name).expanduser()
    if not path.exists():
        if _looks_local(name):
            raise UsageError(f"{key} {name}: no such directory; give a model directory (with config.json) or a Hub "
                             "id such as Qwen/Qwen2.5-0.5B")
        return  # a Hub id: transformers resolves it (offline: from the cache)
    if not path.is_dir():
        raise UsageError(f"{key} {name} is a file; give the model's directory")
    adapter = path / "adapter_config.json"
    if adapter.is_file() and not (path / "config.json").is_file():
        try:
            base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            raise UsageError(f"{adapter}: not a valid adapter config (JSON object); re-save the adapter") from None
        if not base:
            raise UsageError(f"{adapter}: no base_model_name_or_path; set it to the base model's directory or Hub id")
        if _looks_local(base) and not Path(base).expanduser().is_dir():
            raise UsageError(
                f"{key} {name} is a LoRA adapter whose base model {base} is missing ({adapter.name}: "
                "base_model_name_or_path); put the base model there, or set base_model_name_or_path to where it is"
            )
        if Path(base).expanduser().is_dir():
            check_model_source(base, use_safetensors, key=f"the base model of {name}")
        return
    if use_safetensors and not any(path.glob("*.safetensors")):
        pickled = sorted(f.name for pattern in PICKLE_WEIGHTS for f in path.glob(pattern))
        if pickled:
            raise UsageError(
                f"{key} {name} has only pickle weights ({pickled[0]}), which can run code when loaded; convert them "
                "to safetensors, or pass --use_safetensors false if you trust the file"
            )


def load_tokenizer(model_args, token: str | None = None):
    """The tokenizer, with a pad token (its own, else `pad_token`, else its eos; never the pooling token) and the
    chosen padding and truncation sides."""
    from transformers import AutoTokenizer

    name = model_args.tokenizer_name or model_args.model_name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name,
            cache_dir=model_args.cache_dir,
            use_fast=model_args.use_fast_tokenizer,
            revision=model_args.model_revision,
            token=token,
            trust_remote_code=model_args.trust_remote_code,
        )
    except (OSError, ValueError) as e:
        raise _load_error("tokenizer", name, e) from None
    configure_tokenizer(tokenizer, model_args)
    return tokenizer


def configure_tokenizer(tokenizer, model_args) -> None:
    """Pooling marker (appended by the tokenizer itself), pad token (never the pooling token), padding side and
    truncation side, as the arguments say."""
    marker = pooling_token(model_args, tokenizer)
    if marker is not None:
        append_pooling_token(tokenizer, marker)
    set_pad_token(tokenizer, model_args.pad_token, avoid=marker)
    set_sides(tokenizer, model_args.padding_side or tokenizer.padding_side,
              getattr(model_args, "truncation_side", None) or tokenizer.truncation_side)


def set_sides(tokenizer, padding_side: str, truncation_side: str) -> None:
    """Set the padding and truncation sides so that `save_pretrained` writes both into tokenizer_config.json (it
    saves only the attributes named in `init_kwargs`; a tokenizer loaded without them would truncate on the right)."""
    tokenizer.padding_side, tokenizer.truncation_side = padding_side, truncation_side
    tokenizer.init_kwargs["padding_side"], tokenizer.init_kwargs["truncation_side"] = padding_side, truncation_side


def pooling_token(model_args, tokenizer) -> str | None:
    """The end-of-text marker appended to every text (`cls_token`, or the eos token under `append_eos`), or None.

    It must be an existing token: a new one would need a new, untrained embedding row.
    """
    if getattr(model_args, "cls_token", None):
        if model_args.cls_token not in tokenizer.get_vocab():
            raise UsageError(f"cls_token {model_args.cls_token!r} is not in the tokenizer's vocabulary; choose an "
                             "existing (special) token, e.g. the eos token, so no embedding is added")
        return model_args.cls_token
    if getattr(model_args, "append_eos", False):
        if tokenizer.eos_token is None:
            raise UsageError("append_eos: the tokenizer has no eos token; name an existing marker with cls_token")
        return tokenizer.eos_token
    return None


def pooling_token_id(tokenizer, marker: str | None) -> int | None:
    return None if marker is None else tokenizer.convert_tokens_to_ids(marker)


def append_pooling_token(tokenizer, marker: str) -> None:
    """Make the tokenizer itself append `marker` to every text (and pair), after truncation.

    Done in the fast tokenizer's post-processor, which is saved in tokenizer.json, so every consumer of the saved
    tokenizer (`pipeline`, vLLM, an export) gets the tokens training used: `tokenizer(text, truncation=True)` ends in
    the marker, and truncation leaves room for it on either side. A template the tokenizer already has (BERT's
    [CLS] $A [SEP], a BOS) is kept, with the marker after it. tokenizers cannot chain two templates (it panics),
    so an existing template is rebuilt with the marker appended.
    """
    from tokenizers import processors

    if has_pooling_token(tokenizer, marker):
        return
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UsageError(f"a pooling token needs a fast tokenizer; {type(tokenizer).__name__} has none "
                         "(use_fast_tokenizer true, or drop append_eos / cls_token)")
    marker_id = tokenizer.convert_tokens_to_ids(marker)
    current = backend.post_processor
    state = json.loads(current.__getstate__()) if current is not None else None
    kind = state.get("type") if state else None
    if kind == "Sequence":
        parts = [json.loads(p.__getstate__()) if not isinstance(p, dict) else p for p in state["processors"]]
        templates = [i for i, p in enumerate(parts) if p.get("type") in ("TemplateProcessing", "BertProcessing",
                                                                          "RobertaProcessing")]
        rebuilt = [processors.ByteLevel(**{k: v for k, v in p.items() if k != "type"}) if p["type"] == "ByteLevel"
                   else None for p in parts]
        if any(r is None for i, r in enumerate(rebuilt) if i not in templates):
            raise UsageError(f"{type(tokenizer).__name__}: its post-processor {[p['type'] for p in parts]} cannot "
                             "take a pooling token; drop append_eos / cls_token")
        if templates:
            rebuilt[templates[-1]] = _template_with_marker(parts[templates[-1]], marker, marker_id)
        else:
            rebuilt.append(_template_with_marker(None, marker, marker_id))
        backend.post_processor = processors.Sequence(rebuilt)
    elif kind in (None, "TemplateProcessing", "BertProcessing", "RobertaProcessing"):
        backend.post_processor = _template_with_marker(state, marker, marker_id)
    elif kind == "ByteLevel":
        backend.post_processor = processors.Sequence([current, _template_with_marker(None, marker, marker_id)])
    else:
        raise UsageError(f"{type(tokenizer).__name__}: its post-processor {kind} cannot take a pooling token; drop "
                         "append_eos / cls_token")


def _template_with_marker(state: dict | None, marker: str, marker_id: int):
    """A TemplateProcessing equal to `state` (a template, BERT or RoBERTa processor, or none) with the marker last."""
    from tokenizers import processors

    special: dict[str, dict] = {}
    if state is None:
        single, pair = ["$A:0"], ["$A:0", "$B:1"]
    elif state["type"] == "TemplateProcessing":
        def item(piece: dict) -> str:
            if "SpecialToken" in piece:
                return f"{piece['SpecialToken']['id']}:{piece['SpecialToken']['type_id']}"
            return f"${piece['Sequence']['id']}:{piece['Sequence']['type_id']}"

        single, pair = [item(p) for p in state["single"]], [item(p) for p in state["pair"]]
        special = dict(state.get("special_tokens") or {})
    else:  # BertProcessing / RobertaProcessing: (token, id) pairs for sep and cls
        (sep, sep_id), (cls, cls_id) = state["sep"], state["cls"]
        special = {t: {"id": t, "ids": [i], "tokens": [t]} for t, i in ((sep, sep_id), (cls, cls_id))}
        if state["type"] == "BertProcessing":
            single, pair = [f"{cls}:0", "$A:0", f"{sep}:0"], [f"{cls}:0", "$A:0", f"{sep}:0", "$B:1", f"{sep}:1"]
        else:
            single, pair = [f"{cls}:0", "$A:0", f"{sep}:0"], [f"{cls}:0", "$A:0", f"{sep}:0", f"{sep}:0", "$B:0",
                                                              f"{sep}:0"]
    last_type = lambda template: template[-1].rsplit(":", 1)[1]  # noqa: E731 - the marker joins the last segment
    special[marker] = {"id": marker, "ids": [marker_id], "tokens": [marker]}
    return processors.TemplateProcessing(single=single + [f"{marker}:{last_type(single)}"],
                                         pair=pair + [f"{marker}:{last_type(pair)}"],
                                         special_tokens=list(special.values()))


def has_pooling_token(tokenizer, marker: str) -> bool:
    """Whether the tokenizer's own post-processor ends every text with `marker` (as `append_pooling_token` does)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.post_processor is None:
        return False
    state = json.loads(backend.post_processor.__getstate__())
    parts = state.get("processors", [state]) if state.get("type") == "Sequence" else [state]
    for part in parts:
        part = json.loads(part.__getstate__()) if not isinstance(part, dict) else part
        if part.get("type") == "TemplateProcessing":
            last = part["single"][-1]
            return "SpecialToken" in last and last["SpecialToken"]["id"] == marker
    return False


# Existing special tokens tried, in order, as the pad token when the usual one is the pooling marker
# (Qwen2: <|endoftext|> is both eos and pad; <|im_end|> exists in every Qwen2 tokenizer).
PAD_FALLBACKS = ("<|endoftext|>", "<|im_end|>", "<|end_of_text|>", "<|eot_id|>", "</s>", "<pad>", "[PAD]")


def set_pad_token(tokenizer, pad_token: str | None = None, avoid: str | None = None) -> None:
    """Decoder LLMs often ship without a pad token: use the one asked for, else the eos token.

    The head pools the last token that is not the pad token, so a text must not end in the pad token:
    with a pooling marker (`avoid`), the pad token is switched to another existing special token (no new
    embedding row), and asking for the marker itself as pad token is an error.
    """
    if pad_token is not None:
        if pad_token not in tokenizer.get_vocab():
            raise UsageError(f"pad_token {pad_token!r} is not in the tokenizer's vocabulary; choose an existing token")
        if pad_token == avoid:
            raise UsageError(f"pad_token {pad_token!r} is also the pooling token appended to every text; the head "
                             "would skip it: choose another pad_token")
        tokenizer.pad_token = pad_token
    elif tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UsageError("the tokenizer has neither a pad nor an eos token; set pad_token to an existing token")
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("pad token: none in the tokenizer, using its eos token %r", tokenizer.eos_token)
    if avoid is not None and tokenizer.pad_token == avoid:
        vocab = tokenizer.get_vocab()
        candidates = [tokenizer.eos_token, *PAD_FALLBACKS, tokenizer.unk_token, tokenizer.bos_token,
                      *tokenizer.all_special_tokens]
        choice = next((c for c in candidates if c and c != avoid and c in vocab), None)
        if choice is None:
            raise UsageError(f"the pooling token {avoid!r} is also the pad token and the tokenizer has no other "
                             "special token to pad with; set pad_token to an existing token")
        tokenizer.pad_token = choice
        logger.info("pad token: %r (the pooling token %r must differ from it)", choice, avoid)


def resolve_dtype(name: str, bf16: bool = False, fp16: bool = False) -> torch.dtype:
    """`auto` keeps fp32 master weights for training (bf16/fp16 compute comes from autocast under --bf16/--fp16)."""
    if name == "auto":
        return torch.float32
    return DTYPES[name]


def load_model(model_args, label_space: LabelSpace, tokenizer, dtype: torch.dtype = torch.float32,
               token: str | None = None, quantization_config=None, device_map=None):
    """The model to train: AutoModelForSequenceClassification with the label maps, problem type and pad token id in
    its config (a trained directory is loaded for evaluation or prediction by `seqcls.model_dir.load`)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    name = model_args.config_name or model_args.model_name_or_path
    try:
        config = AutoConfig.from_pretrained(
            name,
            num_labels=label_space.num_labels,
            id2label=label_space.id2label,
            label2id=label_space.label2id,
            problem_type=label_space.problem_type,
            cache_dir=model_args.cache_dir,
            revision=model_args.model_revision,
            token=token,
            trust_remote_code=model_args.trust_remote_code,
        )
    except (OSError, ValueError) as e:
        raise _load_error("model config", name, e) from None
    # without pad_token_id the head cannot find the last real token of a padded batch
    config.pad_token_id = tokenizer.pad_token_id
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path,
            config=config,
            cache_dir=model_args.cache_dir,
            revision=model_args.model_revision,
            token=token,
            trust_remote_code=model_args.trust_remote_code,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            dtype=dtype,
            attn_implementation=model_args.attn_implementation,
            # None: safetensors first, else a .bin through torch.load(weights_only=True), only when the user allows
            use_safetensors=True if getattr(model_args, "use_safetensors", True) else None,
            **({"quantization_config": quantization_config, "device_map": device_map} if quantization_config else {}),
        )
    except (OSError, ValueError) as e:
        raise _load_error("model", model_args.model_name_or_path, e) from None
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def max_length_for(tokenizer, model, requested: int | None, cap: int = 2048) -> int:
    """Truncation length: the requested one (checked against the model's positions), else the tokenizer's limit
    capped at `cap`."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if requested is not None:
        if limit is not None and requested > limit:
            raise UsageError(
                f"max_seq_length {requested} is beyond the model's limit of {limit} positions; use at most {limit}"
            )
        return requested
    candidates = [c for c in (tokenizer.model_max_length, limit, cap) if c and c < 10**9]
    return min(candidates)


def check_vocab_ids(model, tokenizer, marker: str | None) -> None:
    """The pad and pooling tokens must have embedding rows: they are never added, only chosen among existing ones."""
    rows = model.get_input_embeddings().num_embeddings
    ids = (("pad token", tokenizer.pad_token_id), ("pooling token", pooling_token_id(tokenizer, marker)))
    for what, token_id in ids:
        if token_id is not None and not 0 <= token_id < rows:
            raise UsageError(f"the {what} id {token_id} is outside the model's {rows} embedding rows; choose another "
                             "existing token")


# ----------------------------------------------------------------------------------------------------------
# The classification head, precision


HEAD_NAMES = ("score", "classifier")  # decoder LLMs (Qwen2, Llama, ...), encoders (BERT, ...)


def head_module(model) -> tuple[str, torch.nn.Module]:
    """The classification head's attribute name and module (`score` for decoder LLMs, `classifier` for BERT)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in HEAD_NAMES:
        module = getattr(base, name, None)
        if isinstance(module, torch.nn.Module):
            return name, module
    raise UsageError(f"{type(base).__name__} has no classification head named {' or '.join(HEAD_NAMES)}; this "
                     "architecture is not supported")


def _fp32_forward(self, hidden_states, *args, **kwargs):
    """A head forward that runs in fp32 outside autocast (bound to the head instance by `keep_head_fp32`)."""
    with torch.autocast(device_type=hidden_states.device.type, enabled=False):
        return type(self).forward(self, hidden_states.float(), *args, **kwargs)


def keep_head_fp32(model) -> None:
    """Keep the head's weights and matmul in fp32 under fp16 autocast (fp16 logits overflow and round badly).

    Bound as an instance method, so the copy PEFT makes of the head for `modules_to_save` keeps it too.
    """
    import types

    _, head = head_module(model)
    head.float()
    for module in head.modules():
        if isinstance(module, torch.nn.Linear):
            module.forward = types.MethodType(_fp32_forward, module)


def prepare_precision(model, fp16: bool, dtype: torch.dtype) -> None:
    """fp16 (autocast or fp16 weights): warn for Qwen models, keep the head in fp32. The loss is fp32 always."""
    if not (fp16 or dtype == torch.float16):
        return
    if str(getattr(model.config, "model_type", "")).startswith("qwen"):
        logger.warning("fp16 with a Qwen model: its activations are known to overflow fp16 (inf/nan losses); "
                       "prefer bf16 on a GPU that has it. The head and the loss are kept in fp32.")
    keep_head_fp32(model)


def prepare_model(model, training_args, dtype: torch.dtype) -> None:
    """Ready a loaded model for training, in place: fp16 keeps the head in fp32 (prepare_precision),
    freeze_embeddings stops training the input embeddings."""
    prepare_precision(model, training_args.fp16, dtype)
    if training_args.freeze_embeddings:
        frozen = freeze_input_embeddings(model)
        logger.info("freeze_embeddings: %.1fM input embedding parameters are not trained", frozen / 1e6)

def freeze_input_embeddings(model) -> int:
    """Stop training the input embedding matrix (no gradient, no optimizer state); return its parameter count.

    For a decoder LLM fine-tuned as a classifier the vocabulary matrix is most of the memory traffic of a
    step (27% of Qwen2.5-0.5B's parameters), while the rows a classification set touches move little.
    """
    embeddings = model.get_input_embeddings()
    if embeddings is None:
        raise UsageError(f"freeze_embeddings: {type(model).__name__} exposes no input embeddings; set it false")
    count = 0
    for p in embeddings.parameters():
        p.requires_grad_(False)
        count += p.numel()
    return count


def label_word_map(label_space: LabelSpace, words: list[str] | dict | None) -> dict[str, str]:
    """LABEL=WORD pairs (a list of "LABEL=WORD", or a mapping from a YAML config) completed with the label names."""
    given: dict[str, str] = {}
    items = words if isinstance(words, dict) else None
    if items is None and words and len(words) == 1 and isinstance(words[0], dict):
        items = words[0]
    if items is not None:
        given = {str(k): str(v) for k, v in items.items()}
    else:
        for pair in words or []:
            label, sep, word = str(pair).partition("=")
            if not sep or not label or not word:
                raise UsageError(f"label_words: {pair!r} is not LABEL=WORD; write e.g. --label_words 0=差 1=好")
            given[label] = word
    unknown = sorted(set(given) - set(label_space.names))
    if unknown:
        raise UsageError(f"label_words names unknown label(s) {unknown}; the labels are {list(label_space.names)}")
    return {name: given.get(name, name) for name in label_space.names}


def _lm_output_rows(model, model_dir: Path) -> torch.Tensor:
    """The causal LM's output embedding matrix: the tied input embedding, else lm_head.weight from the checkpoint
    (AutoModelForSequenceClassification does not load it; reading the one tensor beats loading the whole LM)."""
    config = model.config
    if getattr(config, "tie_word_embeddings", False):
        return model.get_input_embeddings().weight
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = {k: model_dir / f for k, f in weight_map.items()}
    else:
        files = {}
        from safetensors import safe_open

        for f in model_dir.glob("*.safetensors"):
            with safe_open(str(f), "pt") as st:
                files.update({k: f for k in st.keys()})
    key = next((k for k in files if k == "lm_head.weight" or k.endswith(".lm_head.weight")), None)
    if key is None:
        raise UsageError(f"head_init label_words: {model_dir} has no language-model head (no lm_head.weight in its "
                         "safetensors weights, embeddings not tied); drop head_init")
    from safetensors import safe_open

    with safe_open(str(files[key]), "pt") as st:
        return st.get_tensor(key)


def init_head_from_label_words(model, tokenizer, label_space: LabelSpace, words: list[str] | dict | None,
                               model_dir: str | Path) -> dict[str, int]:
    """Start each row of the `score` head as the LM output row of its label word's FIRST token (a multi-token word:
    its first token, logged), so the classifier's step-0 logits are the LM's next-token logits of those tokens at
    the pooled position. Returns label -> token id."""
    if label_space.problem_type == REGRESSION:
        raise UsageError("head_init label_words needs labels; this is regression (one output, no label words)")
    name, head = head_module(model)
    if name != "score" or not isinstance(head, torch.nn.Linear) or getattr(model.config, "is_encoder_decoder", False):
        raise UsageError(f"head_init label_words needs a decoder LLM whose head `score` reads the last token's hidden "
                         f"state; {model.config.model_type} has a `{name}` head (no language-model head to start "
                         "from); drop head_init")
    mapping = label_word_map(label_space, words)
    ids: dict[str, int] = {}
    for label, word in mapping.items():
        tokens = tokenizer(word, add_special_tokens=False)["input_ids"]
        unk = getattr(tokenizer, "unk_token_id", None)
        if not tokens or (unk is not None and tokens[0] == unk):
            raise UsageError(f"label_words: {word!r} (label {label!r}) is not in the vocabulary of the tokenizer; "
                             f"give another word with --label_words {label}=WORD")
        if len(tokens) > 1:
            logger.info("label word %r (label %r) is %d tokens; its first token %r starts the head row", word, label,
                        len(tokens), tokenizer.convert_ids_to_tokens(tokens[0]))
        ids[label] = tokens[0]
    clash = [(a, b) for a in ids for b in ids if a < b and ids[a] == ids[b]]
    if clash:
        a, b = clash[0]
        raise UsageError(f"label_words: labels {a!r} and {b!r} start with the same token "
                         f"{tokenizer.convert_ids_to_tokens(ids[a])!r}, so their rows would be equal; give words that "
                         f"differ in their first token (--label_words {a}=WORD {b}=WORD)")
    rows = _lm_output_rows(model, Path(model_dir))
    if max(ids.values()) >= rows.shape[0]:
        raise UsageError(f"label_words: token id {max(ids.values())} is beyond the model's {rows.shape[0]} output rows")
    with torch.no_grad():
        index = torch.tensor([ids[n] for n in label_space.names], device=rows.device)
        head.weight.copy_(rows.index_select(0, index).to(head.weight.device, head.weight.dtype))
        if head.bias is not None:
            head.bias.zero_()
    logger.info("head_init label_words: %s", {n: tokenizer.convert_ids_to_tokens(i) for n, i in ids.items()})
    return ids
