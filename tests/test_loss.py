"""The loss formulas of seqcls/loss.py on examples small enough to compute by hand.

Logits are chosen as logs of simple ratios so the probabilities are exact:
row a: logits ln[1, 2, 1] -> p = [1/4, 1/2, 1/4], true class 1 -> cross-entropy ln 2
row b: logits ln[1, 1, 2] -> p = [1/4, 1/4, 1/2], true class 0 -> cross-entropy ln 4
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqcls.errors import UsageError
from seqcls.labels import MULTI, REGRESSION, SINGLE, LabelSpace
from seqcls.loss import ClassificationLoss, resolve_class_weights

LN2, LN4 = math.log(2), math.log(4)
LOGITS = torch.log(torch.tensor([[1.0, 2.0, 1.0], [1.0, 1.0, 2.0]]))
LABELS = torch.tensor([1, 0])


def loss_of(loss_fn, logits=LOGITS, labels=LABELS, n=None):
    return float(loss_fn({"logits": logits}, labels, num_items_in_batch=n))


def test_plain_cross_entropy_is_unchanged():
    assert loss_of(ClassificationLoss(SINGLE)) == pytest.approx((LN2 + LN4) / 2, rel=1e-6)


def test_class_weights_weigh_each_row_by_its_true_class_and_divide_by_the_row_count():
    # weights [2, 0.5, 1]: row a (class 1) x 0.5, row b (class 0) x 2; divided by N = 2 rows, not by 2.5
    loss = ClassificationLoss(SINGLE, class_weights=[2.0, 0.5, 1.0])
    expected = (0.5 * LN2 + 2 * LN4) / 2
    assert loss_of(loss, n=2) == pytest.approx(expected, rel=1e-6)
    assert loss_of(loss) == pytest.approx(expected, rel=1e-6)  # evaluation (no count): the same mean
    # torch's weighted mean would divide by the sum of the weights (2.5): not what we do, see loss.py
    assert F.cross_entropy(LOGITS, LABELS, weight=torch.tensor([2.0, 0.5, 1.0])).item() != pytest.approx(expected)


def test_focal_loss_scales_each_row_by_one_minus_p_true_to_the_gamma():
    # gamma 2: row a (1 - 1/2)^2 ln 2, row b (1 - 1/4)^2 ln 4
    expected = (0.25 * LN2 + 0.5625 * LN4) / 2
    assert loss_of(ClassificationLoss(SINGLE, focal_gamma=2.0)) == pytest.approx(expected, rel=1e-6)
    # with class weights [2, 0.5, 1] on top
    expected_w = (0.5 * 0.25 * LN2 + 2 * 0.5625 * LN4) / 2
    assert loss_of(ClassificationLoss(SINGLE, [2.0, 0.5, 1.0], focal_gamma=2.0)) == pytest.approx(expected_w, rel=1e-6)


def test_label_smoothing():
    # eps 0.3, C 3, row a: -(0.7) ln 1/2 - 0.1 (ln 1/4 + ln 1/2 + ln 1/4) = 0.7 ln 2 + 0.5 ln 2 = 1.2 ln 2
    # row b: -(0.7) ln 1/4 - 0.1 (ln 1/4 + ln 1/4 + ln 1/2) = 1.4 ln 2 + 0.5 ln 2 = 1.9 ln 2
    loss = ClassificationLoss(SINGLE, label_smoothing=0.3)
    assert loss_of(loss) == pytest.approx((1.2 * LN2 + 1.9 * LN2) / 2, rel=1e-6)
    assert loss_of(loss) == pytest.approx(F.cross_entropy(LOGITS, LABELS, label_smoothing=0.3).item(), rel=1e-6)


def test_multi_label_positive_weights_and_focal():
    # logits [0, ln 3]: sigmoid [1/2, 3/4]; targets [1, 0]; positive weights [3, 2]
    # label 0 (positive): 3 * -ln(1/2) = 3 ln 2; label 1 (negative, weight not applied): -ln(1/4) = ln 4
    logits = torch.tensor([[0.0, math.log(3)]])
    labels = torch.tensor([[1.0, 0.0]])
    loss = ClassificationLoss(MULTI, class_weights=[3.0, 2.0])
    assert loss_of(loss, logits, labels, n=2) == pytest.approx((3 * LN2 + LN4) / 2, rel=1e-6)
    # focal gamma 1: label 0 p_true 1/2 -> x 1/2; label 1 p_true 1/4 -> x 3/4
    focal = ClassificationLoss(MULTI, class_weights=[3.0, 2.0], focal_gamma=1.0)
    assert loss_of(focal, logits, labels, n=2) == pytest.approx((0.5 * 3 * LN2 + 0.75 * LN4) / 2, rel=1e-6)


def test_weighted_focal_loss_stays_exact_under_gradient_accumulation():
    # the Trainer passes N = targets in the whole accumulated batch: micro-batch losses then add up exactly
    torch.manual_seed(0)
    logits = torch.randn(8, 3)
    labels = torch.randint(0, 3, (8,))
    loss = ClassificationLoss(SINGLE, [0.5, 1.0, 3.0], focal_gamma=2.0, label_smoothing=0.1)
    whole = loss({"logits": logits}, labels, num_items_in_batch=8)
    parts = sum(loss({"logits": logits[i:i + 2]}, labels[i:i + 2], num_items_in_batch=8) for i in range(0, 8, 2))
    assert float(whole) == pytest.approx(float(parts), rel=1e-6)


def test_loss_math_is_fp32_for_half_precision_logits():
    out = ClassificationLoss(SINGLE, [1.0, 2.0, 1.0], focal_gamma=2.0)({"logits": LOGITS.half()}, LABELS, 2)
    assert out.dtype == torch.float32


def test_auto_class_weights():
    single = LabelSpace(SINGLE, ("a", "b"))
    weights = resolve_class_weights(["auto"], single, [0, 0, 0, 1])
    assert weights == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])  # N / (C n_c)
    assert 3 * weights[0] + weights[1] == pytest.approx(4)  # the train rows' weights sum to N: scale kept
    multi = LabelSpace(MULTI, ("x", "y", "z"))
    targets = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=float)
    assert resolve_class_weights(["auto"], multi, targets) == pytest.approx([2 / 2, 3 / 1, 1.0])  # neg / pos
    assert resolve_class_weights(["1", "2.5"], single, [0, 1]) == [1.0, 2.5]



@pytest.mark.parametrize("seed", range(10))
def test_auto_class_weights_are_the_hand_written_formula(seed):
    # w[c] = N / (C * n_c), 1 for a label train never shows: what this function computed by hand before sklearn did it
    rng = np.random.default_rng(seed)
    n_labels = int(rng.integers(2, 7))
    targets = rng.integers(0, n_labels - (seed % 2), size=int(rng.integers(1, 50)))  # odd seeds: a label never shown
    space = LabelSpace(SINGLE, tuple(f"l{i}" for i in range(n_labels)))
    counts = np.bincount(targets, minlength=n_labels).astype(np.float64)
    expected = np.where(counts > 0, len(targets) / (n_labels * np.maximum(counts, 1)), 1.0)
    got = resolve_class_weights(["auto"], space, targets.tolist())
    assert got == expected.tolist() if len(np.unique(targets)) == n_labels else got == pytest.approx(expected, rel=1e-15)

def test_loss_option_mistakes_are_usage_errors():
    with pytest.raises(UsageError, match="one weight per label"):
        resolve_class_weights(["1", "2", "3"], LabelSpace(SINGLE, ("a", "b")), [0, 1])
    with pytest.raises(UsageError, match="regression"):
        resolve_class_weights(["auto"], LabelSpace(REGRESSION), [0.5])
    with pytest.raises(UsageError, match="single-label"):
        ClassificationLoss(MULTI, label_smoothing=0.1)
    with pytest.raises(UsageError, match="regression"):
        ClassificationLoss(REGRESSION, focal_gamma=2.0)
