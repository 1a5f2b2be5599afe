"""How training rows become batches: token lengths, length-sorted evaluation, and token-budget batches.

The Trainer's own samplers pick a fixed number of rows per batch. A token budget instead caps the padded size
of a batch (rows x longest row), so a batch of long texts does not blow the memory and a batch of short ones
is not tiny. No well-kept library offers this for a map-style dataset under the Trainer, so it is written here.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

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


def resolve_token_budget(setting: str | int, lengths: np.ndarray, batch_size: int, strategy: str,
                         pad_to_max_length: bool) -> int | None:
    """The token budget of training batches, or None for batches of `batch_size` rows.

    auto: `batch_size` rows of the 95th-percentile length (at least the longest row), so that a batch is never
    bigger than a fixed-size batch of typical long rows, and batches of short rows carry more of them (fewer
    optimizer steps per epoch, each fuller). Only with length grouping and dynamic padding, where it applies.
    """
    if setting == "off" or len(lengths) == 0:
        return None
    if setting == "auto":
        if strategy != "group_by_length" or pad_to_max_length:
            return None
        typical = int(np.ceil(np.percentile(lengths, 95)))
        return max(batch_size * typical, int(lengths.max()))
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
    """Batches of rows of similar length whose padded size (rows x longest) is at most `max_tokens`.

    Each epoch, rows of equal length are shuffled among themselves and the batches are shuffled, both from
    `seed` + epoch: deterministic, and every row appears exactly once per epoch. The batch sizes depend only on
    the lengths, so the number of batches is the same every epoch (the Trainer plans its steps from it).
    It has no `batch_size`: accelerate then shards its variable-size batches across processes as they are.
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray, max_tokens: int, seed: int = 0, shuffle: bool = True,
                 packed: bool = False):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        check_token_budget(self.lengths, max_tokens)
        self.max_tokens = max_tokens
        self.seed = seed
        self.shuffle = shuffle
        self.packed = packed
        self.epoch = 0
        self._num_batches = len(budget_batches(self.lengths, max_tokens, packed))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in the order they are served."""
        if not self.shuffle:
            return budget_batches(self.lengths, self.max_tokens, self.packed)
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(len(self.lengths))
        order = perm[np.argsort(self.lengths[perm], kind="stable")]  # ascending length, ties in random order
        batches = budget_batches(self.lengths, self.max_tokens, self.packed, order=order)
        return [batches[j] for j in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        return self._num_batches


__all__ = ["token_lengths", "sorted_by_length", "budget_batches", "resolve_token_budget", "check_token_budget", "TokenBudgetBatchSampler"]
