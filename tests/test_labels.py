import pytest

from seqcls.errors import UsageError
from seqcls.labels import MULTI, REGRESSION, SINGLE, LabelSpace, build_label_space, infer_problem_type


def test_problem_type_is_inferred_from_label_values():
    assert infer_problem_type(["积极", "消极"]) == SINGLE
    assert infer_problem_type([0, 2, 1]) == SINGLE
    assert infer_problem_type([["a"], ["a", "b"], []]) == MULTI
    assert infer_problem_type([0.5, 3, 4.2]) == REGRESSION


def test_mixed_label_types_are_an_error_that_counts_them():
    with pytest.raises(UsageError, match=r"mixes types \(1 int, 2 str\)"):
        infer_problem_type(["a", 1, "b"], "train.jsonl")


def test_label_order_is_sorted_unless_class_names_are_given():
    space = build_label_space(["消极", "积极", "中立", "积极"])
    assert space.names == tuple(sorted(["消极", "积极", "中立"]))
    ordered = build_label_space(["消极", "积极", "中立"], class_names=["积极", "消极", "中立"])
    assert ordered.id2label == {0: "积极", 1: "消极", 2: "中立"}
    assert ordered.encode("中立", "x") == 2


def test_integer_labels_sort_numerically():
    assert build_label_space([10, 2, 1]).names == ("1", "2", "10")


def test_class_names_must_cover_train_labels():
    with pytest.raises(UsageError, match=r"\['c'\] are not in class_names"):
        build_label_space(["a", "b", "c"], class_names=["a", "b"])


def test_multi_label_rows_become_multi_hot_vectors():
    space = build_label_space([["billing"], ["refund", "billing"], ["shipping"]])
    assert space.problem_type == MULTI
    assert space.encode(["shipping", "billing"], "x") == [1.0, 0.0, 1.0]


def test_unseen_label_names_its_place_and_the_fix():
    space = build_label_space(["a", "b"])
    with pytest.raises(UsageError, match=r"dev.jsonl:7: label 'z' is not among the train labels \['a', 'b'\]"):
        space.encode("z", "dev.jsonl:7")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "high", None])
def test_regression_labels_must_be_finite_numbers(bad):
    space = build_label_space([1.0, 2.5], do_regression=True)
    assert space.num_labels == 1
    with pytest.raises(UsageError):
        space.encode(bad, "x:1")


def test_list_label_in_single_label_data_is_an_error():
    with pytest.raises(UsageError, match="single-label"):
        build_label_space(["a", "b"]).encode(["a"], "x:3")


def test_single_label_needs_two_classes():
    with pytest.raises(UsageError, match="at least 2 labels"):
        LabelSpace(SINGLE, ("only",))


def test_integer_labels_come_back_as_integers():
    """Labels written as integers are predicted as integers (the label maps keep names as strings)."""
    import numpy as np

    from seqcls.model_dir import ModelSettings
    from seqcls.outputs import decode_logits

    space = build_label_space([2, 0, 1, 10, 0])
    assert space.names == ("0", "1", "2", "10") and space.label_type == "int"
    rows = decode_logits(space, np.array([[0.0, 0.0, 0.0, 5.0], [3.0, 0.0, 0.0, 0.0]]))
    assert [r["label"] for r in rows] == [10, 0] and list(rows[0]["probabilities"])[0] == "10"
    saved = ModelSettings(label_space=space).to_dict()
    assert ModelSettings.from_dict(saved, "x").label_space == space
    multi = build_label_space([[1, 2], [3]])
    assert decode_logits(multi, np.array([[5.0, -5.0, 5.0]]))[0]["label"] == [1, 3]
    assert build_label_space(["a", "b"]).label_type == "str"


def test_too_many_labels_a_row_is_a_warning():
    from seqcls.metrics import too_many_labels

    assert too_many_labels({"eval_labels_per_row": 13.6, "eval_true_labels_per_row": 1.2}, "eval_")
    assert too_many_labels({"labels_per_row": 1.5, "true_labels_per_row": 1.2}) is None
    assert too_many_labels({"macro_f1": 0.3}) is None


@pytest.mark.parametrize("labels, message", [
    (["a", "b", ""], r"train: the label is empty \(''\); give every row a label"),
    ([["a"], ["b", ["c"]]], r"train: label \['b', \['c'\]\] holds \['c'\] \(list\); a multi-label row is a flat list"),
    ([["a"], ["b", None]], r"holds None \(null\)"),
    ([["a"], ["b", " "]], r"label \['b', ' '\] holds an empty name"),
])
def test_empty_and_nested_labels_are_errors_not_classes(labels, message):
    with pytest.raises(UsageError, match=message):
        build_label_space(labels)


def test_a_label_of_the_other_type_says_so():
    with pytest.raises(UsageError, match=r"dev.jsonl:3: label 'pos' is a string, but the train labels are integers "
                                         r"\['0', '1'\]; use one label type in every file"):
        build_label_space([1, 0]).encode("pos", "dev.jsonl:3")
    assert build_label_space(["0", "1"]).encode(1, "dev.jsonl:3") == 1  # "1" and 1 name the same class
