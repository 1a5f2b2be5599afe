"""How training rows become batches: token lengths, length-sorted evaluation, and token-budget batches.

The Trainer's own samplers pick a fixed number of rows per batch. A token budget instead caps the padded size
of a batch (rows x longest row), so a batch of long texts does not blow the memory and a batch of short ones
is not tiny. No well-kept library offers this for a map-style dataset under the Trainer, so it is written here.
"""
from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from .errors import UsageError


def token_lengths(ds, column: str = "input_ids") -> np.ndarray:
    """The number of tokens of every row, read from the Arrow column (no Python loop over rows)."""
    import pyarrow.compute as pc

    table = ds.with_format("arrow")[:] if len(ds) else None
    if table is None:
        return np.zeros(0, dtype=np.int64)
    return pc.list_value_length(table.column(column)).to_numpy(zero_copy_only=False).astype(np.int64)


def sorted_by_length(ds) -> tuple[Any, np.ndarray]:
    """The dataset sorted longest first (the biggest batch comes first: an OOM shows at once), and the order."""
    order = np.argsort(-token_lengths(ds), kind="stable")
    return ds.select(order), order


def budget_batches(lengths: np.ndarray, max_tokens: int, packed: bool = False,
                   order: np.ndarray | None = None) -> list[list[int]]:
    """Cut indices, taken in ascending length (or in `order`), into batches whose cost stays within `max_tokens`.

    The cost of a padded batch is rows x its longest row; of a packed batch, the sum of its lengths. Greedy in
    ascending length, every batch but the last of a run is as full as the budget allows.
    """
    if order is None:
        order = np.argsort(lengths, kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    longest = total = 0
    for i in order.tolist():
        n = int(lengths[i])
        new_longest, new_total = max(longest, n), total + n
        cost = new_total if packed else new_longest * (len(current) + 1)
        if current and cost > max_tokens:
            batches.append(current)
            current, new_longest, new_total = [], n, n
        current.append(i)
        longest, total = new_longest, new_total
    if current:
        batches.append(current)
    return batches


def random_packed_batches(lengths: np.ndarray, max_tokens: int, order: np.ndarray) -> list[list[int]]:
    """Cut rows taken in `order` into a fixed number of batches of about equal token sums, each within `max_tokens`.

    The number of batches, ceil(total / (max_tokens - longest)), depends on the lengths only, so every epoch has
    the same count (the Trainer plans its steps from it); cutting at equal shares of the running token sum keeps
    every batch under share + longest <= max_tokens, and a share of at least the longest row leaves none empty.
    """
    longest, total = int(lengths.max()), int(lengths.sum())
    count = -(-total // (max_tokens - longest)) if max_tokens > longest else len(lengths) + 1
    if total / count < longest:
        raise UsageError(
            f"max_tokens_per_batch {max_tokens} is too small for packed random batches with rows of up to {longest} "
            f"tokens; give at least {2 * longest}, or train_sampling_strategy group_by_length"
        )
    ends = np.cumsum(lengths[order])
    cuts = np.searchsorted(ends, total * np.arange(1, count) / count, side="right")
    return [chunk.tolist() for chunk in np.split(order, cuts)]


def resolve_token_budget(setting: str | int, lengths: np.ndarray, batch_size: int, strategy: str,
                         packing: bool, pad_to_max_length: bool) -> int | None:
    """The token budget of training batches, or None for batches of `batch_size` rows.

    auto: `batch_size` rows of the 95th-percentile length (at least twice the longest row when packing), so a
    batch is never bigger than a fixed-size batch of typical long rows, and batches of short rows carry more of
    them: fewer, fuller optimizer steps. Only where it applies: with length-grouped padded batches, or packing.
    """
    if setting == "off" or len(lengths) == 0:
        return None
    if not packing and strategy != "group_by_length":
        if setting == "auto":
            return None
        raise UsageError(f"max_tokens_per_batch {setting} without packing groups rows by length; it cannot be "
                         f"combined with train_sampling_strategy {strategy}: drop one of them, or set packing true")
    if setting == "auto":
        if pad_to_max_length:
            return None
        typical = int(np.ceil(np.percentile(lengths, 95)))
        longest = int(lengths.max())
        return max(batch_size * typical, (2 if packing and strategy != "group_by_length" else 1) * longest)
    check_token_budget(lengths, int(setting))
    return int(setting)


def check_token_budget(lengths: np.ndarray, max_tokens: int) -> None:
    """A row longer than the budget could only make a batch over it: a user error, said before training starts."""
    longest = int(lengths.max()) if len(lengths) else 0
    if longest > max_tokens:
        raise UsageError(
            f"max_tokens_per_batch {max_tokens} is smaller than the longest training row ({longest} tokens); "
            f"set max_tokens_per_batch to at least max_seq_length"
        )


class TokenBudgetBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Training batches under a token budget, every row exactly once per epoch, deterministic from `seed` + epoch.

    Length-grouped (`grouped`, padded or packed): rows sorted by length (ties shuffled) are cut greedily so
    that the cost stays within `max_tokens`: rows x longest row for a padded batch, the sum of lengths for a
    packed one; then the batches are shuffled. Random (packed only, since padding random rows wastes tokens):
    rows in random order are cut into batches of about equal token sums (`random_packed_batches`).
    The batch sizes depend only on the lengths, so the number of batches is the same every epoch. It has no
    `batch_size`: accelerate shards its variable-size batches across processes as they are.
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray, max_tokens: int, seed: int = 0, packed: bool = False,
                 grouped: bool = True):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        check_token_budget(self.lengths, max_tokens)
        if not grouped and not packed:
            raise ValueError("random batches under a token budget need packing")
        self.max_tokens = max_tokens
        self.seed = seed
        self.packed = packed
        self.grouped = grouped
        self.epoch = 0
        self._num_batches = len(self.batches())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in the order they are served."""
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(len(self.lengths))
        if not self.grouped:
            return random_packed_batches(self.lengths, self.max_tokens, perm)
        order = perm[np.argsort(self.lengths[perm], kind="stable")]  # ascending length, ties in random order
        batches = budget_batches(self.lengths, self.max_tokens, self.packed, order=order)
        return [batches[j] for j in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        return self._num_batches


class BatchPlan(NamedTuple):
    """How training batches are made (seqcls.batching.plan_training_batches)."""

    collator: Any  # the training collator; None: the padding collator
    max_tokens: int | None  # the token budget; None: per_device_train_batch_size rows
    packing: bool

    def options(self) -> dict[str, Any]:
        """The decided `packing` / `max_tokens_per_batch`, as options: run_args.json says how the model was trained."""
        return {"packing": self.packing,
                "max_tokens_per_batch": self.max_tokens if self.max_tokens is not None else "off"}


def plan_training_batches(model, tokenizer, train_ds, model_args, data_args, training_args) -> BatchPlan:
    """Decide how training batches are made: packed or padded, in which order, under which token budget.

    Resolves `packing` auto (checked on this model) and `max_tokens_per_batch` auto; the arguments stay as parsed.
    Neither default changes what is computed: packing or not, the batches hold the same rows in the same random order.
    """
    import logging

    from .packing import PackingCollator, packed_row_length, resolve_packing

    lengths = token_lengths(train_ds)
    packing = False
    if training_args.packing and not data_args.pad_to_max_length:
        row_length = packed_row_length(model_args.attn_implementation, int(lengths.max()))
        samples = [list(ids[:32]) for ids in train_ds[:3]["input_ids"]]
        packing = resolve_packing(training_args.packing, model, model_args.attn_implementation, samples, row_length)
    collator = PackingCollator(tokenizer.pad_token_id, row_length) if packing else None
    budget = resolve_token_budget(training_args.max_tokens_per_batch, lengths,
                                  training_args.per_device_train_batch_size, training_args.train_sampling_strategy,
                                  packing, data_args.pad_to_max_length)
    logging.getLogger("seqcls").info(
        "training batches: %s, %s order, %s (per_device_train_batch_size %d; train rows: 95th-percentile length %d, "
        "longest %d)", "packed" if packing else "padded", training_args.train_sampling_strategy,
        f"at most {budget} tokens each" if budget else "fixed rows", training_args.per_device_train_batch_size,
        int(np.ceil(np.percentile(lengths, 95))), int(lengths.max()))
    return BatchPlan(collator, budget, packing)


__all__ = ["token_lengths", "sorted_by_length", "budget_batches", "random_packed_batches", "resolve_token_budget",
           "check_token_budget", "TokenBudgetBatchSampler", "BatchPlan", "plan_training_batches"]
