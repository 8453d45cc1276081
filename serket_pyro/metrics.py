"""Clustering evaluation metrics.

Unsupervised modules (GMM, MLDA, HMM, ...) return cluster indices whose
numbering is arbitrary, so comparing them with ground-truth categories needs
either a label matching (accuracy) or a permutation-invariant score (ARI,
NMI).  Everything here is computed from the contingency table with numpy and
scipy only; scikit-learn is not a dependency.

Conventions
-----------
* ``true`` and ``pred`` are 1-D arrays of shape ``(N,)`` holding
  non-negative integer labels.  Floats that are exactly integral (e.g. the
  output of :func:`numpy.loadtxt`) are accepted.  Labels need not be
  contiguous (``{3, 7}`` is fine); they are compressed with
  ``np.unique(..., return_inverse=True)`` internally.
* The number of predicted clusters ``K`` may differ from the number of true
  categories ``C`` (more or fewer).  Label matching is always one-to-one:
  when ``K > C`` some predicted clusters stay unmatched, and every data point
  in them counts as wrong.

Public functions
----------------
confusion_matrix, best_mapping, accuracy, relabel, greedy_mapping,
greedy_accuracy, adjusted_rand_index, normalized_mutual_info, summarize.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

from .validation import check_positive_int

__all__ = [
    "confusion_matrix",
    "best_mapping",
    "accuracy",
    "relabel",
    "greedy_mapping",
    "greedy_accuracy",
    "adjusted_rand_index",
    "normalized_mutual_info",
    "summarize",
]


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------
def _as_labels(x, name):
    """Validate one label vector and return it as an ``int64`` array ``(N,)``."""
    try:
        arr = np.asarray(x)
    except Exception as e:  # ragged input and the like
        raise ValueError(f"{name} could not be converted to an array: {e}") from e
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of labels, got shape {arr.shape}"
        )
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} contains labels too large for int64")
        out = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise ValueError(f"{name} contains NaN; labels must be integers")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains inf; labels must be integers")
        if (arr != np.round(arr)).any():
            raise ValueError(
                f"{name} contains non-integral values; labels must be integers"
            )
        out = arr.astype(np.int64)
    else:
        raise ValueError(
            f"{name} must contain integer labels, got dtype {arr.dtype}"
        )
    if out.size and out.min() < 0:
        raise ValueError(
            f"{name} contains negative labels (min {out.min()}); labels must be "
            "non-negative integers"
        )
    return out


def _check_pair(true, pred):
    """Validate a ``(true, pred)`` pair; return two ``int64`` arrays ``(N,)``."""
    t = _as_labels(true, "true")
    p = _as_labels(pred, "pred")
    if t.shape[0] != p.shape[0]:
        raise ValueError(
            f"true and pred must have the same length, got len(true)={t.shape[0]} "
            f"and len(pred)={p.shape[0]}"
        )
    if t.shape[0] == 0:
        raise ValueError("true and pred must be non-empty")
    return t, p


def _contingency(t, p):
    """Contingency table of validated labels.

    Returns
    -------
    table : ndarray of int64, shape (C, K)
        ``table[c, k]`` = number of points with ``true == t_labels[c]`` and
        ``pred == p_labels[k]``.
    t_labels : ndarray, shape (C,)
        Sorted unique true labels.
    p_labels : ndarray, shape (K,)
        Sorted unique predicted labels.
    """
    t_labels, t_idx = np.unique(t, return_inverse=True)
    p_labels, p_idx = np.unique(p, return_inverse=True)
    C, K = t_labels.shape[0], p_labels.shape[0]
    table = np.bincount(t_idx * K + p_idx, minlength=C * K).reshape(C, K)
    return table.astype(np.int64), t_labels, p_labels


# ---------------------------------------------------------------------------
# contingency / confusion matrix
# ---------------------------------------------------------------------------
def confusion_matrix(true, pred, n_true=None, n_pred=None):
    """Count matrix indexed by raw label values.

    Parameters
    ----------
    true : array_like of int, shape (N,)
        Ground-truth labels.
    pred : array_like of int, shape (N,)
        Predicted (cluster) labels.
    n_true : int, optional
        Number of rows; defaults to ``max(true) + 1``.  Must exceed every
        true label.
    n_pred : int, optional
        Number of columns; defaults to ``max(pred) + 1``.  Must exceed every
        predicted label.

    Returns
    -------
    ndarray of int64, shape (n_true, n_pred)
        ``M[i, j]`` = number of points with ``true == i`` and ``pred == j``.
        Label values absent from the data give all-zero rows / columns.
    """
    t, p = _check_pair(true, pred)
    if n_true is None:
        n_true = int(t.max()) + 1
    if n_pred is None:
        n_pred = int(p.max()) + 1
    n_true, n_pred = int(n_true), int(n_pred)
    if t.max() >= n_true:
        raise ValueError(
            f"n_true={n_true} is too small for max(true)={int(t.max())}"
        )
    if p.max() >= n_pred:
        raise ValueError(
            f"n_pred={n_pred} is too small for max(pred)={int(p.max())}"
        )
    flat = np.bincount(t * n_pred + p, minlength=n_true * n_pred)
    return flat.reshape(n_true, n_pred).astype(np.int64)


# ---------------------------------------------------------------------------
# optimal (Hungarian) matching
# ---------------------------------------------------------------------------
def _hungarian(t, p):
    """Optimal one-to-one matching on validated labels.

    Returns ``(mapping, n_correct)`` where ``mapping`` is a dict
    ``pred_label -> true_label`` (``-1`` for unmatched predicted labels).
    """
    table, t_labels, p_labels = _contingency(t, p)
    rows, cols = linear_sum_assignment(table, maximize=True)
    n_correct = int(table[rows, cols].sum())
    mapping = {int(k): -1 for k in p_labels}
    for r, c in zip(rows, cols):
        mapping[int(p_labels[c])] = int(t_labels[r])
    return mapping, n_correct


def best_mapping(true, pred):
    """Optimal one-to-one assignment of predicted labels to true labels.

    Solves the linear assignment problem on the ``(C, K)`` contingency table
    with :func:`scipy.optimize.linear_sum_assignment`, maximising the number
    of points whose mapped prediction equals the true label.

    Parameters
    ----------
    true : array_like of int, shape (N,)
    pred : array_like of int, shape (N,)

    Returns
    -------
    dict
        ``{pred_label: true_label}`` for every label occurring in ``pred``.
        The matching is one-to-one: if there are more predicted clusters
        than true categories (``K > C``), the ``K - C`` clusters left out of
        the optimal matching map to ``-1`` (their points count as wrong).
        It is deliberately *not* a many-to-one "majority" mapping, which
        would inflate accuracy for over-segmented clusterings.
    """
    t, p = _check_pair(true, pred)
    return _hungarian(t, p)[0]


def accuracy(true, pred):
    """Hungarian (optimal one-to-one) clustering accuracy.

    Parameters
    ----------
    true : array_like of int, shape (N,)
    pred : array_like of int, shape (N,)

    Returns
    -------
    float
        Fraction of points correctly labelled under :func:`best_mapping`,
        in ``[0, 1]``.  Invariant to any renaming of the predicted labels.
    """
    t, p = _check_pair(true, pred)
    return _hungarian(t, p)[1] / t.shape[0]


def relabel(true, pred):
    """Rename predicted labels to best match the true categories.

    Parameters
    ----------
    true : array_like of int, shape (N,)
    pred : array_like of int, shape (N,)

    Returns
    -------
    ndarray of int64, shape (N,)
        ``pred`` passed through :func:`best_mapping`.  Predicted clusters
        that are unmatched (only possible when ``K > C``) keep distinct
        labels that never collide with a true label: they are numbered
        ``max(true) + 1, max(true) + 2, ...`` in increasing order of their
        original predicted label.  Hence ``mean(relabel(true, pred) == true)
        == accuracy(true, pred)`` and distinct clusters stay distinct.
    """
    t, p = _check_pair(true, pred)
    mapping = _hungarian(t, p)[0]
    p_labels = np.array(sorted(mapping), dtype=np.int64)  # sorted unique pred
    targets = np.array([mapping[int(k)] for k in p_labels], dtype=np.int64)
    unmatched = targets < 0
    targets[unmatched] = t.max() + 1 + np.arange(int(unmatched.sum()))
    return targets[np.searchsorted(p_labels, p)]


# ---------------------------------------------------------------------------
# greedy pairwise-swap matching (original Serket rule)
# ---------------------------------------------------------------------------
def _greedy(t, p, max_iter):
    """Pairwise-swap local search on validated labels.

    Returns ``(mapping, n_correct)`` with ``mapping`` a dict
    ``pred_label -> label value`` (possibly a value that is not a true label).
    """
    labels = np.union1d(t, p)  # shared label space, shape (L,)
    L = labels.shape[0]
    ti = np.searchsorted(labels, t)
    pi = np.searchsorted(labels, p)
    # R[v, c]: number of points whose *current* predicted value is v and whose
    # true value is c.  Swapping label values i and j == swapping rows i, j.
    R = np.bincount(pi * L + ti, minlength=L * L).reshape(L, L).astype(np.int64)
    # owner[v]: original predicted label index currently carrying value v.
    owner = np.arange(L)
    idx = np.arange(L)
    for _ in range(int(max_iter)):
        changed = False
        for i in range(L):
            j0 = 0
            while j0 < L:
                js = idx[j0:]
                gain = R[i, js] + R[js, i] - R[i, i] - R[js, js]
                hit = np.flatnonzero(gain > 0)
                if hit.size == 0:
                    break
                j = int(js[hit[0]])
                R[[i, j]] = R[[j, i]]
                owner[[i, j]] = owner[[j, i]]
                changed = True
                j0 = j + 1
        if not changed:
            break
    present = np.isin(labels[owner], p)
    mapping = {
        int(labels[owner[v]]): int(labels[v]) for v in np.flatnonzero(present)
    }
    return mapping, int(np.trace(R))


def greedy_mapping(true, pred, max_iter=1000):
    """Label mapping found by the original Serket pairwise-swap heuristic.

    The original Serket modules evaluate clusterings by local search: start
    from the identity mapping (predicted label ``v`` means true label ``v``),
    then sweep over label pairs ``(i, j)`` (``i`` outer, ``j`` inner, both in
    increasing order) and swap the two label values in the current
    prediction whenever that strictly increases the number of matches,
    keeping the swap and continuing the sweep.  Sweeps repeat until a full
    sweep makes no change.  Since any sequence of transpositions is tried
    only one at a time, the search can stop at a local optimum strictly
    below the Hungarian optimum (e.g. when the best relabelling is a
    3-cycle and every single swap loses matches).  It is provided for
    comparison with results reported by the original implementation.

    The label space is the union of the label values seen in ``true`` and
    ``pred``; with contiguous labels ``0..K-1`` and ``K >= C`` this is
    exactly the original ``range(max(pred) + 1)``.  Swap gains are evaluated
    on the contingency table, so each step costs ``O(L)``, not ``O(N)``.

    Parameters
    ----------
    true : array_like of int, shape (N,)
    pred : array_like of int, shape (N,)
    max_iter : int, default 1000
        Maximum number of full sweeps.  The search always terminates (each
        accepted swap strictly increases an integer count bounded by ``N``);
        this only caps the run time.

    Returns
    -------
    dict
        ``{pred_label: label_value}`` for every label occurring in ``pred``.
        The value may be a label that never occurs in ``true`` (such points
        count as wrong).
    """
    max_iter = check_positive_int(max_iter, "max_iter", "greedy_mapping")
    t, p = _check_pair(true, pred)
    return _greedy(t, p, max_iter)[0]


def greedy_accuracy(true, pred, max_iter=1000):
    """Accuracy under :func:`greedy_mapping` (original Serket evaluation).

    Parameters
    ----------
    true : array_like of int, shape (N,)
    pred : array_like of int, shape (N,)
    max_iter : int, default 1000
        Maximum number of full sweeps of the swap search.

    Returns
    -------
    float
        In ``[0, 1]``; never larger than :func:`accuracy`, possibly smaller.
    """
    max_iter = check_positive_int(max_iter, "max_iter", "greedy_accuracy")
    t, p = _check_pair(true, pred)
    return _greedy(t, p, max_iter)[1] / t.shape[0]


# ---------------------------------------------------------------------------
# permutation-invariant scores
# ---------------------------------------------------------------------------
def adjusted_rand_index(true, pred):
    """Adjusted Rand index (Hubert & Arabie, 1985).

    Computed from the pair-confusion counts of the ``(C, K)`` contingency
    table, with the same conventions as scikit-learn's
    ``adjusted_rand_score``: 1.0 for identical partitions (up to renaming,
    including the degenerate all-one-cluster / all-singletons cases),
    about 0 for independent labelings, can be negative.

    Parameters
    ----------
    true : array_like of int, shape (N,)
    pred : array_like of int, shape (N,)

    Returns
    -------
    float
    """
    t, p = _check_pair(true, pred)
    table = _contingency(t, p)[0].astype(np.float64)
    n = float(t.shape[0])
    a = table.sum(axis=1)  # (C,) true class sizes
    b = table.sum(axis=0)  # (K,) cluster sizes
    sum_sq = (table**2).sum()
    # ordered-pair counts (each unordered pair counted twice)
    tp = sum_sq - n  # same class, same cluster
    fp = (b**2).sum() - sum_sq  # different class, same cluster
    fn = (a**2).sum() - sum_sq  # same class, different cluster
    tn = n**2 - tp - fp - fn - n
    if fn == 0 and fp == 0:
        return 1.0
    return float(2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))


def _entropy(counts, n):
    """Shannon entropy (nats) of a count vector ``(M,)`` summing to ``n``."""
    q = counts[counts > 0] / n
    return float(-(q * np.log(q)).sum())


def normalized_mutual_info(true, pred):
    """Normalised mutual information, arithmetic-mean normalisation.

    ``NMI = I(true; pred) / ((H(true) + H(pred)) / 2)``, matching
    scikit-learn's ``normalized_mutual_info_score`` default
    (``average_method="arithmetic"``).  If both labelings consist of a
    single cluster the score is 1.0; if the mutual information is 0 (e.g.
    exactly one side is a single cluster) it is 0.0.

    Parameters
    ----------
    true : array_like of int, shape (N,)
    pred : array_like of int, shape (N,)

    Returns
    -------
    float
        In ``[0, 1]``.
    """
    t, p = _check_pair(true, pred)
    table = _contingency(t, p)[0].astype(np.float64)
    C, K = table.shape
    if C == K == 1:
        return 1.0
    n = float(t.shape[0])
    a = table.sum(axis=1)
    b = table.sum(axis=0)
    nz = table > 0
    pij = table[nz] / n
    outer = np.outer(a, b)[nz] / (n * n)
    mi = float((pij * (np.log(pij) - np.log(outer))).sum())
    mi = max(mi, 0.0)  # clip round-off
    if mi == 0.0:
        return 0.0
    norm = 0.5 * (_entropy(a, n) + _entropy(b, n))
    norm = max(norm, np.finfo(np.float64).eps)
    return float(min(mi / norm, 1.0))


def summarize(true, pred):
    """All metrics in one dict.

    Parameters
    ----------
    true : array_like of int, shape (N,)
    pred : array_like of int, shape (N,)

    Returns
    -------
    dict
        ``{"accuracy": float, "greedy_accuracy": float, "ari": float,
        "nmi": float, "n": int}``.
    """
    t, p = _check_pair(true, pred)
    n = t.shape[0]
    return {
        "accuracy": _hungarian(t, p)[1] / n,
        "greedy_accuracy": _greedy(t, p, 1000)[1] / n,
        "ari": adjusted_rand_index(t, p),
        "nmi": normalized_mutual_info(t, p),
        "n": int(n),
    }
