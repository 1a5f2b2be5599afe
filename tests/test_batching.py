"""Token-budget batches: every row once per epoch, the budget respected, deterministic, shardable across ranks."""
import numpy as np
import pytest

from seqcls.batching import TokenBudgetBatchSampler, budget_batches, sorted_by_length, token_lengths
from seqcls.errors import UsageError

RNG = np.random.default_rng(0)
LENGTHS = np.concatenate([RNG.integers(1, 20, 300), RNG.integers(20, 128, 60), [128, 128, 1]])


MODES = {"padded, grouped": dict(packed=False, grouped=True), "packed, grouped": dict(packed=True, grouped=True),
         "packed, random": dict(packed=True, grouped=False)}


@pytest.mark.parametrize("mode", MODES)
def test_every_row_once_and_budget_respected(mode):
    packed = MODES[mode]["packed"]
    sampler = TokenBudgetBatchSampler(LENGTHS, max_tokens=512, seed=3, **MODES[mode])
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)  # the same count every epoch: the Trainer plans its steps from it
        assert all(batches)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(LENGTHS)))
        for b in batches:
            cost = LENGTHS[b].sum() if packed else LENGTHS[b].max() * len(b)
            assert cost <= 512
        # short rows make big batches, long rows small ones: that is the point of a budget
        sizes = {len(b) for b in batches}
        assert max(sizes) >= 2 * min(sizes)


def test_random_packed_batches_mix_lengths_and_fill_evenly():
    sampler = TokenBudgetBatchSampler(LENGTHS, max_tokens=1024, seed=0, packed=True, grouped=False)
    batches = list(sampler)
    sums = [int(LENGTHS[b].sum()) for b in batches]
    assert max(sums) - min(sums) <= 2 * LENGTHS.max()  # about equal token sums
    spreads = [LENGTHS[b].max() - LENGTHS[b].min() for b in batches]
    assert np.median(spreads) > 50  # random rows, not length-sorted ones


def test_random_packed_budget_must_leave_room():
    with pytest.raises(UsageError, match="too small for packed random batches"):
        TokenBudgetBatchSampler(LENGTHS, max_tokens=140, packed=True, grouped=False)


def test_deterministic_per_seed_and_epoch():
    a = TokenBudgetBatchSampler(LENGTHS, 400, seed=1)
    b = TokenBudgetBatchSampler(LENGTHS, 400, seed=1)
    assert list(TokenBudgetBatchSampler(LENGTHS, 400, seed=1, packed=True, grouped=False)) == list(
        TokenBudgetBatchSampler(LENGTHS, 400, seed=1, packed=True, grouped=False))
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


def test_auto_budget_is_batch_size_rows_of_the_95th_percentile_length():
    from seqcls.batching import resolve_token_budget

    lengths = np.array([10] * 95 + [40] * 4 + [100])
    p95 = int(np.ceil(np.percentile(lengths, 95)))
    assert resolve_token_budget("auto", lengths, 16, "group_by_length", False, False) == 16 * p95
    assert resolve_token_budget("auto", lengths, 32, "random", True, False) == 32 * p95  # packed random batches
    long_tail = np.array([5] * 99 + [500])
    assert resolve_token_budget("auto", long_tail, 4, "group_by_length", False, False) == 500  # the longest row fits
    assert resolve_token_budget("auto", long_tail, 4, "random", True, False) == 1000  # room to cut random batches
    assert resolve_token_budget("auto", lengths, 16, "random", False, False) is None  # random padded rows: fixed
    assert resolve_token_budget("auto", lengths, 16, "group_by_length", False, True) is None  # static padding
    assert resolve_token_budget("off", lengths, 16, "group_by_length", False, False) is None
    assert resolve_token_budget(4096, lengths, 16, "group_by_length", False, False) == 4096
    with pytest.raises(UsageError, match="cannot be combined with train_sampling_strategy random"):
        resolve_token_budget(4096, lengths, 16, "random", False, False)


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("off", "off"), ("none", "off"), ("0", "off"),
                                             ("4096", 4096), (4096, 4096)])
def test_budget_setting_values(value, expected):
    from seqcls.arguments import token_budget_setting

    assert token_budget_setting(value) == expected


@pytest.mark.parametrize("argv, message", [
    (["--max_tokens_per_batch", "lots"], "give auto, off or a number of tokens"),
    (["--max_tokens_per_batch", "-5"], "must be at least 1"),
    (["--packing", "true", "--pad_to_max_length", "true"], "contradict"),
    (["--packing", "sometimes"], "give auto, true or false"),
])
def test_bad_throughput_options_are_usage_errors(argv, message):
    from seqcls.arguments import parse_args

    with pytest.raises(UsageError, match=message):
        parse_args(["--model_name_or_path", "m", "--train_file", "t.jsonl", "--output_dir", "o", *argv])
