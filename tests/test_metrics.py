"""Tests for serket_pyro.metrics."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serket_pyro import metrics as M


# ---------------------------------------------------------------------------
# slow reference implementations (independent of the module under test)
# ---------------------------------------------------------------------------
def brute_force_accuracy(true, pred):
    """Best one-to-one matching by enumerating all injective maps."""
    true = np.asarray(true)
    pred = np.asarray(pred)
    t_labels = list(np.unique(true))
    p_labels = list(np.unique(pred))
    L = max(len(t_labels), len(p_labels))
    # pad the true side with "no label" slots so every injective map from
    # predicted labels to true labels (leaving some unmatched) is covered
    targets = t_labels + [None] * (L - len(t_labels))
    best = 0
    for perm in itertools.permutations(range(L), len(p_labels)):
        correct = 0
        for k, slot in zip(p_labels, perm):
            if targets[slot] is None:
                continue
            correct += int(np.sum((pred == k) & (true == targets[slot])))
        best = max(best, correct)
    return best / len(true)


def literal_greedy_count(true, pred):
    """Direct transcription of the swap rule on the label array itself."""
    true = np.asarray(true)
    res = np.asarray(pred).copy()
    labels = np.union1d(true, res)
    best = int(np.sum(res == true))
    changed = True
    while changed:
        changed = False
        for i in labels:
            for j in labels:
                tmp = res.copy()
                tmp[res == i] = j
                tmp[res == j] = i
                c = int(np.sum(tmp == true))
                if c > best:
                    best, res, changed = c, tmp, True
    return best


def pair_counting_ari(true, pred):
    """ARI by explicit enumeration of all unordered pairs."""
    n = len(true)
    a = b = c = d = 0  # same/same, same-true/diff-pred, diff/same, diff/diff
    for i in range(n):
        for j in range(i + 1, n):
            st_ = true[i] == true[j]
            sp = pred[i] == pred[j]
            if st_ and sp:
                a += 1
            elif st_:
                b += 1
            elif sp:
                c += 1
            else:
                d += 1
    pairs = a + b + c + d
    if pairs == 0:
        return 1.0
    expected = (a + b) * (a + c) / pairs
    maximum = ((a + b) + (a + c)) / 2
    if maximum == expected:  # identical trivial partitions
        return 1.0
    return (a - expected) / (maximum - expected)


def loop_nmi(true, pred):
    """NMI with explicit dictionaries / loops (arithmetic mean)."""
    n = len(true)
    pt, pp, pj = {}, {}, {}
    for x, y in zip(true, pred):
        pt[x] = pt.get(x, 0) + 1
        pp[y] = pp.get(y, 0) + 1
        pj[(x, y)] = pj.get((x, y), 0) + 1
    if len(pt) == len(pp) == 1:
        return 1.0
    mi = sum(c / n * math.log(c * n / (pt[x] * pp[y])) for (x, y), c in pj.items())
    ht = -sum(c / n * math.log(c / n) for c in pt.values())
    hp = -sum(c / n * math.log(c / n) for c in pp.values())
    if mi <= 1e-15:
        return 0.0
    return mi / ((ht + hp) / 2)


def _random_case(rng, n, k_true, k_pred):
    true = rng.integers(0, k_true, size=n)
    pred = rng.integers(0, k_pred, size=n)
    # correlate a bit so the optimum is not trivial
    mask = rng.random(n) < 0.5
    pred[mask] = true[mask] % k_pred
    return true, pred


# a configuration where the best relabelling is a 3-cycle and each single swap
# loses matches: identity = 6/15, optimum = 9/15
STUCK_TRUE = np.array([0] * 2 + [1] * 3 + [1] * 2 + [2] * 3 + [2] * 2 + [0] * 3)
STUCK_PRED = np.array([0] * 5 + [1] * 5 + [2] * 5)


# ---------------------------------------------------------------------------
# confusion matrix
# ---------------------------------------------------------------------------
def test_confusion_matrix_counts():
    true = [0, 0, 1, 2, 2, 2]
    pred = [1, 1, 0, 2, 2, 0]
    C = M.confusion_matrix(true, pred)
    np.testing.assert_array_equal(C, [[0, 2, 0], [1, 0, 0], [1, 0, 2]])
    assert C.dtype.kind == "i"
    C2 = M.confusion_matrix(true, pred, n_true=4, n_pred=5)
    assert C2.shape == (4, 5)
    np.testing.assert_array_equal(C2[:3, :3], C)
    assert C2[3].sum() == 0 and C2[:, 3:].sum() == 0
    with pytest.raises(ValueError, match="n_true"):
        M.confusion_matrix(true, pred, n_true=2)
    with pytest.raises(ValueError, match="n_pred"):
        M.confusion_matrix(true, pred, n_pred=2)


# ---------------------------------------------------------------------------
# Hungarian accuracy
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("k_true", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("k_pred", [1, 2, 3, 4, 5])
def test_accuracy_matches_brute_force(k_true, k_pred):
    rng = np.random.default_rng(100 * k_true + k_pred)
    for _ in range(3):
        n = int(rng.integers(1, 30))
        true, pred = _random_case(rng, n, k_true, k_pred)
        assert M.accuracy(true, pred) == pytest.approx(brute_force_accuracy(true, pred))
        # relabelled predictions realise exactly the optimal accuracy
        assert np.mean(M.relabel(true, pred) == true) == pytest.approx(
            M.accuracy(true, pred)
        )


def test_accuracy_noncontiguous_labels():
    true = np.array([3, 3, 7, 7, 7])
    pred = np.array([20, 20, 10, 10, 20])
    assert M.accuracy(true, pred) == pytest.approx(0.8)
    assert M.best_mapping(true, pred) == {20: 3, 10: 7}
    np.testing.assert_array_equal(M.relabel(true, pred), [3, 3, 7, 7, 3])


def test_accuracy_perfect_and_permuted():
    true = np.repeat(np.arange(4), 5)
    assert M.accuracy(true, true) == 1.0
    perm = np.array([2, 0, 3, 1])
    assert M.accuracy(true, perm[true]) == 1.0


def test_accepts_integral_floats():
    true = np.array([0.0, 0.0, 1.0, 1.0])  # as np.loadtxt would give
    pred = [1, 1, 0, 0]
    assert M.accuracy(true, pred) == 1.0
    assert M.summarize(true, pred)["n"] == 4


# ---------------------------------------------------------------------------
# mapping / relabel
# ---------------------------------------------------------------------------
def test_best_mapping_more_pred_clusters():
    true = [0, 0, 1, 1, 1]
    pred = [5, 5, 2, 2, 9]
    mapping = M.best_mapping(true, pred)
    assert mapping == {5: 0, 2: 1, 9: -1}
    r = M.relabel(true, pred)
    # unmatched cluster 9 gets a fresh label max(true)+1 = 2
    np.testing.assert_array_equal(r, [0, 0, 1, 1, 2])
    assert M.accuracy(true, pred) == pytest.approx(0.8)


def test_relabel_several_unmatched_are_distinct():
    true = [0, 0, 0, 0, 1, 1, 1]
    pred = [4, 4, 4, 1, 3, 3, 0]
    mapping = M.best_mapping(true, pred)
    assert mapping[4] == 0 and mapping[3] == 1
    assert mapping[0] == -1 and mapping[1] == -1
    r = M.relabel(true, pred)
    # unmatched 0 -> 2, unmatched 1 -> 3 (increasing original label order)
    np.testing.assert_array_equal(r, [0, 0, 0, 3, 1, 1, 2])
    assert not np.isin(r[[3, 6]], true).any()


def test_best_mapping_fewer_pred_clusters():
    true = [0, 0, 1, 1, 2, 2, 2]
    pred = [1, 1, 1, 1, 0, 0, 0]
    mapping = M.best_mapping(true, pred)
    assert mapping[0] == 2
    assert mapping[1] in (0, 1)
    assert M.accuracy(true, pred) == pytest.approx(5 / 7)
    np.testing.assert_array_equal(M.relabel(true, pred) == 2, np.array(pred) == 0)


# ---------------------------------------------------------------------------
# greedy swap accuracy
# ---------------------------------------------------------------------------
def test_greedy_stuck_strictly_below_hungarian():
    hung = M.accuracy(STUCK_TRUE, STUCK_PRED)
    greedy = M.greedy_accuracy(STUCK_TRUE, STUCK_PRED)
    assert hung == pytest.approx(9 / 15)
    assert greedy == pytest.approx(6 / 15)
    assert greedy < hung
    # independent confirmation with the literal array-swapping rule
    assert literal_greedy_count(STUCK_TRUE, STUCK_PRED) == 6
    assert brute_force_accuracy(STUCK_TRUE, STUCK_PRED) == pytest.approx(9 / 15)
    assert M.greedy_mapping(STUCK_TRUE, STUCK_PRED) == {0: 0, 1: 1, 2: 2}
    assert M.best_mapping(STUCK_TRUE, STUCK_PRED) == {0: 1, 1: 2, 2: 0}


def test_greedy_matches_literal_rule():
    rng = np.random.default_rng(7)
    for _ in range(40):
        k_true = int(rng.integers(1, 6))
        k_pred = int(rng.integers(1, 6))
        n = int(rng.integers(1, 40))
        true, pred = _random_case(rng, n, k_true, k_pred)
        g = M.greedy_accuracy(true, pred)
        assert g * n == pytest.approx(literal_greedy_count(true, pred))
        assert g <= M.accuracy(true, pred) + 1e-12


def test_greedy_sweep_order_is_first_improvement():
    # the sequential (i outer, j inner, accept first improving swap) sweep
    # reaches 5/8 here; a "best swap first" variant would stop at 3/8
    true = [3, 3, 2, 0, 0, 0, 0, 3]
    pred = [2, 2, 0, 1, 2, 2, 1, 0]
    assert literal_greedy_count(true, pred) == 5
    assert M.greedy_accuracy(true, pred) == pytest.approx(5 / 8)


def test_greedy_mapping_is_consistent():
    rng = np.random.default_rng(3)
    true, pred = _random_case(rng, 60, 4, 5)
    mapping = M.greedy_mapping(true, pred)
    assert set(mapping) == set(np.unique(pred).tolist())
    values = list(mapping.values())
    assert len(set(values)) == len(values)  # one-to-one
    mapped = np.array([mapping[int(k)] for k in pred])
    assert np.mean(mapped == true) == pytest.approx(M.greedy_accuracy(true, pred))


def test_greedy_solves_pure_relabelling():
    true = np.repeat(np.arange(6), 4)
    perm = np.array([3, 5, 0, 1, 2, 4])  # contains a 3-cycle and more
    assert M.greedy_accuracy(true, perm[true]) == 1.0


# ---------------------------------------------------------------------------
# ARI and NMI
# ---------------------------------------------------------------------------
def test_ari_nmi_identical_and_permuted():
    true = np.array([0, 0, 1, 1, 2, 2, 2])
    assert M.adjusted_rand_index(true, true) == pytest.approx(1.0)
    assert M.normalized_mutual_info(true, true) == pytest.approx(1.0)
    perm = np.array([7, 3, 5])
    assert M.adjusted_rand_index(true, perm[true]) == pytest.approx(1.0)
    assert M.normalized_mutual_info(true, perm[true]) == pytest.approx(1.0)


def test_ari_nmi_hand_computed():
    # contingency [[2,0,0],[0,1,1]]: sum C(nij,2)=1, rows 2, cols 1, C(4,2)=6
    # ARI = (1 - 2/6) / (1.5 - 2/6) = 4/7
    assert M.adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)
    # pred determines true: MI = H(true) = ln2, H(pred) = 1.5 ln2 -> 0.8
    assert M.normalized_mutual_info([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(0.8)
    # [[2,1,0],[0,1,2]]: index 2, expected 6*3/15, max 4.5 -> 8/33
    assert M.adjusted_rand_index(
        [0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]
    ) == pytest.approx(8 / 33)
    # perfectly "anti" labelling gives negative ARI
    assert M.adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    assert M.normalized_mutual_info([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)


def test_ari_nmi_degenerate():
    assert M.adjusted_rand_index([1, 1, 1], [4, 4, 4]) == 1.0
    assert M.normalized_mutual_info([1, 1, 1], [4, 4, 4]) == 1.0
    assert M.adjusted_rand_index([0, 1, 2], [2, 0, 1]) == 1.0
    assert M.adjusted_rand_index([0], [0]) == 1.0
    assert M.normalized_mutual_info([0, 0, 1, 1], [0, 0, 0, 0]) == 0.0
    assert M.adjusted_rand_index([0, 0, 1, 1], [0, 0, 0, 0]) == 0.0


def test_ari_nmi_independent_near_zero():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, size=5000)
    pred = rng.integers(0, 4, size=5000)
    assert abs(M.adjusted_rand_index(true, pred)) < 0.01
    assert 0.0 <= M.normalized_mutual_info(true, pred) < 0.01


def test_ari_nmi_match_slow_references():
    rng = np.random.default_rng(11)
    for _ in range(30):
        n = int(rng.integers(1, 40))
        true, pred = _random_case(rng, n, int(rng.integers(1, 5)), int(rng.integers(1, 6)))
        assert M.adjusted_rand_index(true, pred) == pytest.approx(
            pair_counting_ari(true, pred), abs=1e-12
        )
        assert M.normalized_mutual_info(true, pred) == pytest.approx(
            loop_nmi(true, pred), abs=1e-12
        )
        # both scores are symmetric
        assert M.adjusted_rand_index(true, pred) == pytest.approx(
            M.adjusted_rand_index(pred, true)
        )
        assert M.normalized_mutual_info(true, pred) == pytest.approx(
            M.normalized_mutual_info(pred, true)
        )


# ---------------------------------------------------------------------------
# summarize
# ---------------------------------------------------------------------------
def test_summarize():
    s = M.summarize(STUCK_TRUE, STUCK_PRED)
    assert set(s) == {"accuracy", "greedy_accuracy", "ari", "nmi", "n"}
    assert s["n"] == 15
    assert s["accuracy"] == pytest.approx(0.6)
    assert s["greedy_accuracy"] == pytest.approx(0.4)
    assert s["ari"] == pytest.approx(M.adjusted_rand_index(STUCK_TRUE, STUCK_PRED))
    assert s["nmi"] == pytest.approx(M.normalized_mutual_info(STUCK_TRUE, STUCK_PRED))


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------
ALL_FUNCS = [
    M.accuracy,
    M.best_mapping,
    M.relabel,
    M.greedy_accuracy,
    M.greedy_mapping,
    M.adjusted_rand_index,
    M.normalized_mutual_info,
    M.summarize,
    M.confusion_matrix,
]


@pytest.mark.parametrize("fn", ALL_FUNCS)
def test_validation_length_mismatch(fn):
    with pytest.raises(ValueError, match=r"len\(true\)=3.*len\(pred\)=2"):
        fn([0, 1, 1], [0, 1])


@pytest.mark.parametrize("fn", ALL_FUNCS)
@pytest.mark.parametrize(
    "true, pred, msg",
    [
        ([0.0, np.nan, 1.0], [0, 1, 1], "NaN"),
        ([0, 1, 1], [0.0, 1.0, np.nan], "NaN"),
        ([[0, 1], [1, 0]], [[0, 1], [1, 0]], "1-D"),
        ([0, 1], [[0, 1]], "1-D"),
        ([], [], "non-empty"),
        ([0.5, 1.0], [0, 1], "non-integral"),
        ([0, -1], [0, 1], "negative"),
        (["a", "b"], [0, 1], "integer"),
        ([0, np.inf], [0, 1], "inf"),
    ],
)
def test_validation_errors(fn, true, pred, msg):
    with pytest.raises(ValueError, match=msg):
        fn(true, pred)


# ---------------------------------------------------------------------------
# property tests
# ---------------------------------------------------------------------------
@st.composite
def labelings(draw):
    n = draw(st.integers(1, 40))
    true = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    pred = draw(st.lists(st.integers(0, 7), min_size=n, max_size=n))
    perm = draw(st.permutations(list(range(8))))
    return np.array(true), np.array(pred), np.array(perm)


@settings(max_examples=150, deadline=None)
@given(labelings())
def test_accuracy_properties(case):
    true, pred, perm = case
    acc = M.accuracy(true, pred)
    assert 0.0 <= acc <= 1.0
    # invariant to renaming the predicted labels
    assert M.accuracy(true, perm[pred]) == pytest.approx(acc)
    assert M.adjusted_rand_index(true, perm[pred]) == pytest.approx(
        M.adjusted_rand_index(true, pred)
    )
    assert M.normalized_mutual_info(true, perm[pred]) == pytest.approx(
        M.normalized_mutual_info(true, pred)
    )
    # the local search never beats the optimum
    g = M.greedy_accuracy(true, pred)
    assert 0.0 <= g <= acc + 1e-12
    # accuracy is at least the largest cluster-class overlap / n
    C = M.confusion_matrix(true, pred)
    assert acc * len(true) >= C.max() - 1e-9
    assert 0.0 <= M.normalized_mutual_info(true, pred) <= 1.0
    assert M.adjusted_rand_index(true, pred) <= 1.0 + 1e-12


def test_class_occupancy_is_reported_with_and_without_labels(tmp_path):
    """Empty classes and the largest class's share: a collapse shows without any labels."""
    from serket_pyro.classification import write_classification
    from serket_pyro.output import OutputWriter

    probs = np.full((8, 5), 0.1)
    probs[np.arange(8), [0, 0, 0, 0, 0, 0, 2, 3]] = 0.6  # classes 1 and 4 empty, class 0 holds 6/8
    m = write_classification(OutputWriter(tmp_path, 0), probs)
    assert m == {"n_empty_classes": 2, "largest_class_share": 0.75}
    m = write_classification(OutputWriter(tmp_path, 1), probs, category=[0, 0, 0, 0, 1, 1, 2, 3])
    assert m["n_empty_classes"] == 2 and m["largest_class_share"] == 0.75 and m["accuracy"] == 0.75
