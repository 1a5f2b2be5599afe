"""Token-budget batches: every row once per epoch, the budget respected, deterministic, shardable across ranks."""
import numpy as np
import pytest

from seqcls.batching import TokenBudgetBatchSampler, budget_batches, sorted_by_length, token_lengths
from seqcls.errors import UsageError

RNG = np.random.default_rng(0)
LENGTHS = np.concatenate([RNG.integers(1, 20, 300), RNG.integers(20, 128, 60), [128, 128, 1]])


@pytest.mark.parametrize("packed", [False, True])
def test_every_row_once_and_budget_respected(packed):
    sampler = TokenBudgetBatchSampler(LENGTHS, max_tokens=512, seed=3, packed=packed)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(LENGTHS)))
        for b in batches:
            cost = LENGTHS[b].sum() if packed else LENGTHS[b].max() * len(b)
            assert cost <= 512
        # short rows make big batches, long rows small ones: that is the point of a budget
        sizes = {len(b) for b in batches}
        assert max(sizes) >= 4 * min(sizes)


def test_deterministic_per_seed_and_epoch():
    a = TokenBudgetBatchSampler(LENGTHS, 400, seed=1)
    b = TokenBudgetBatchSampler(LENGTHS, 400, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)  # a new order each epoch
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(TokenBudgetBatchSampler(LENGTHS, 400, seed=2)) != list(TokenBudgetBatchSampler(LENGTHS, 400, seed=1))


def test_greedy_fill_in_ascending_length():
    assert budget_batches(np.array([3, 1, 2, 2, 4]), 6) == [[1, 2, 3], [0], [4]]
    assert budget_batches(np.array([3, 1, 2, 2, 4]), 6, packed=True) == [[1, 2, 3], [0], [4]]
    assert budget_batches(np.array([1, 1, 1, 1]), 3, packed=True) == [[0, 1, 2], [3]]


def test_row_longer_than_budget_is_a_usage_error():
    with pytest.raises(UsageError, match="max_tokens_per_batch 100 is smaller than the longest training row"):
        TokenBudgetBatchSampler(LENGTHS, 100)


def test_sharded_across_two_ranks_every_row_is_served():
    """What accelerate does under DDP: each rank takes every other batch (evened out by repeating early ones)."""
    from accelerate.data_loader import BatchSamplerShard

    sampler = TokenBudgetBatchSampler(LENGTHS, 512, seed=0)
    shards = [list(BatchSamplerShard(sampler, num_processes=2, process_index=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1])
    served = {i for shard in shards for batch in shard for i in batch}
    assert served == set(range(len(LENGTHS)))
    assert not {i for b in shards[0] for i in b} & {i for b in shards[1][: len(sampler) // 2] for i in b}


def test_token_lengths_and_sorted_by_length():
    import datasets

    ds = datasets.Dataset.from_dict({"input_ids": [[1] * n for n in (3, 7, 1, 7, 5)]}).select([4, 0, 1, 2, 3])
    assert token_lengths(ds).tolist() == [5, 3, 7, 1, 7]
    sorted_ds, order = sorted_by_length(ds)
    assert order.tolist() == [2, 4, 0, 1, 3]  # longest first, ties in input order
    assert token_lengths(sorted_ds).tolist() == [7, 7, 5, 3, 1]
