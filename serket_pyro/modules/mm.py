"""Markov model over the classes of a child module (Serket's ``mm.MarkovModel``).

The child (a GMM or an MLDA) sends up class probabilities ``P_t`` for ``N`` points in time order;
up to a factor free of ``k`` they are the likelihood of ``z_t = k`` given the child's data, so a
GMM under a Markov model is a hidden Markov model whose emission model is the GMM.  Generative
model (the Pyro submodel :func:`markov_model`)::

    A_j   ~ Dirichlet(alpha * 1_K)                    j = 0..K-1 (rows of the transition matrix)
    z_0   ~ Categorical(init)                          init uniform
    z_t   ~ Categorical(A[z_{t-1}])                    t = 1..N-1
    r_t   ~ Bernoulli(eps)                             "the child's label at t is noise"
    y_t | z_t, r_t:  p(y_t | z_t = k) proportional to P_t(k) if r_t = 0, to 1/K if r_t = 1

The robust likelihood ``(1 - eps) P_t + eps / K`` lets the chain overrule a child that is
confidently wrong at some steps instead of explaining each mistake by a transition.

Inference (``method="forward_backward"``) is exact forward-backward [2]_
(:mod:`serket_pyro.ops.forward_backward`) inside EM for the transitions [3]_, in two stages: the
structure, from several starts with split moves (SMEM [4]_) and ``eps`` fixed, then a refinement
under the hierarchical prior of :func:`shrunk_transitions` with ``eps`` learned, or a confusion
matrix per child where it pays for its parameters (:func:`choose_evidence_model`).  The message to
the child is the evidence of every other step, ``p(y_{-t} | z_t)``, which leaves out the child's
own evidence and class prior; the message up is the smoothed marginal ``p(z_t | y)``.
``method="original"`` keeps the original's sampled-pairs rule (README, design notes).

References
----------
.. [1] T. Nakamura, T. Nagai, T. Taniguchi, "SERKET", Frontiers in Neurorobotics 12:25, 2018.
.. [2] L. R. Rabiner, "A tutorial on hidden Markov models and selected applications in speech
   recognition", Proc. IEEE 77(2), 1989.
.. [3] A. P. Dempster, N. M. Laird, D. B. Rubin, "Maximum likelihood from incomplete data via the
   EM algorithm", JRSS-B 39, 1977.
.. [4] N. Ueda, R. Nakano, Z. Ghahramani, G. E. Hinton, "SMEM algorithm for mixture models",
   Neural Computation 12, 2000.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from .. import distributed as _dist
from ..ops.forward_backward import forward_backward
from ..ops.sharded_forward_backward import sharded_forward_backward
from ..messages import ClassProbs
from ..module import Module
from ..original_api import MM_API, OriginalArgumentWarning
from ..safe_files import check_loaded_probabilities
from ..validation import check_category, check_device, check_positive_float, check_positive_int

__all__ = ["MarkovModel", "markov_model", "original_message", "original_transitions", "prior_marginals"]

_METHODS = ("forward_backward", "original")


# ---------------------------------------------------------------------------------------------
# Pyro submodel
# ---------------------------------------------------------------------------------------------
def markov_model(log_evidence, alpha: float = 0.1, init_prob=None, evidence_noise: float = 0.0,
                 log_bias=None, emission=None) -> None:
    """The Markov model as a Pyro submodel (for checks with enumeration; ``update()`` runs the same
    model with hand-written forward-backward).

    Args:
        log_evidence: ``(N, K)`` log class probabilities of the child (rows in time order), or a
            list of such tensors, one per child.
        alpha: Dirichlet pseudo-count on each row of the transition matrix.
        init_prob: ``(K,)`` distribution of ``z_0`` (default uniform).
        evidence_noise: probability ``eps`` that a child's message at a step is uninformative
            (site ``noise_<c>_<t>``; 0 leaves the sites out).
        log_bias: optional ``(N, K)`` log message from a parent (a factor on every ``z_t``).
        emission: optional ``(children, K, K)`` confusion matrices ``B`` (rows = state): the
            evidence of child ``c`` at ``t`` is ``log sum_j B_c[z_t, j] P_t(j)`` (replaces the noise).

    Sites: ``trans_prob`` (``(K, K)``, in plate ``from_state``), ``z_0 .. z_{N-1}`` (the class the
    child shares, in a ``pyro.markov`` chain), ``noise_<c>_<t>`` and factors ``evidence_<c>_<t>``,
    ``bias_<t>``.  Enumerate ``z_t`` and ``noise`` with ``config_enumerate`` and
    ``TraceEnum_ELBO(max_plate_nesting=1)``; condition ``trans_prob`` to fix the matrix.
    """
    logs = list(log_evidence) if isinstance(log_evidence, (list, tuple)) else [log_evidence]
    logs = [torch.as_tensor(lp) for lp in logs]
    N, K = logs[0].shape
    dtype = logs[0].dtype
    if init_prob is None:
        init_prob = torch.full((K,), 1.0 / K, dtype=dtype)
    with pyro.plate("from_state", K):
        trans = pyro.sample("trans_prob", dist.Dirichlet(torch.full((K, K), float(alpha), dtype=dtype)))
    # normalise the children's messages (log P_t(k)) and mix with the uniform "noise" likelihood
    logs = [lp - torch.logsumexp(lp, -1, keepdim=True) for lp in logs]
    if emission is not None:  # log sum_j B[k, j] P_t(j), (N, K) per child
        emission = torch.as_tensor(emission, dtype=dtype)
        logs = [torch.logsumexp(lp[:, None, :] + B.log()[None], -1) for lp, B in zip(logs, emission)]
        evidence_noise = 0.0
    log_unif = -math.log(K)
    z = None
    for t in pyro.markov(range(N)):
        probs = init_prob if z is None else Vindex(trans)[..., z, :]
        z = pyro.sample(f"z_{t}", dist.Categorical(probs))
        for c, lp in enumerate(logs):
            val = Vindex(lp)[..., t, z]
            if evidence_noise > 0:
                r = pyro.sample(f"noise_{c}_{t}", dist.Bernoulli(torch.tensor(float(evidence_noise), dtype=dtype)))
                val = torch.where(r.bool(), torch.full_like(val, log_unif), val)
            pyro.factor(f"evidence_{c}_{t}", val)
        if log_bias is not None:
            pyro.factor(f"bias_{t}", Vindex(torch.as_tensor(log_bias))[..., t, z])


# ---------------------------------------------------------------------------------------------
# the original Serket rule
# ---------------------------------------------------------------------------------------------
def original_transitions(probs: torch.Tensor, num_samp: int = 100, pseudo_count: float = 0.1) -> torch.Tensor:
    """The original's transition estimate: ``num_samp`` times, for every ``t``, draw
    ``k ~ P_t`` and ``kk ~ P_{t+1}`` independently and count ``k -> kk``; add ``pseudo_count`` and
    normalise each row.  Vectorised over ``t`` and the draws (torch's global RNG).

    Args:
        probs: ``(N, K)`` class probabilities, rows in time order.

    Returns:
        ``(K, K)`` float64 transition matrix, rows = from.
    """
    probs = probs.to(torch.float64)
    K = probs.shape[1]
    draws = dist.Categorical(probs=probs).sample((num_samp,))        # (num_samp, N)
    idx = (draws[:, :-1] * K + draws[:, 1:]).reshape(-1)
    counts = torch.bincount(idx, minlength=K * K).reshape(K, K).to(torch.float64) + pseudo_count
    return counts / counts.sum(1, keepdim=True)


def original_message(probs: torch.Tensor, trans: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The original's message: ``msg[0] = P_0``, ``msg[t, k] ~ bias[t, k] * sum_j P_{t-1}[j] A[j, k]``
    (rows normalised).  Returns ``(N, K)`` probabilities."""
    probs = probs.to(torch.float64)
    msg = torch.empty_like(probs)
    msg[0] = probs[0]
    pred = probs[:-1] @ trans.to(probs)
    if bias is not None:
        pred = pred * bias[1:].to(probs)
    msg[1:] = pred / pred.sum(1, keepdim=True)
    return msg


def prior_marginals(log_init: np.ndarray, trans: np.ndarray, T: int, tol: float = 1e-13,
                    start: int = 0) -> np.ndarray:
    """Log prior marginals ``log p(z_t) = log (init A^t)``, ``(T, K)`` rows normalised (rows
    ``start .. T - 1`` only, ``(T - start, K)``, with ``start``: a shard of the chain).

    The recursion stops once ``p(z_t)`` no longer moves (``tol``, max abs) and repeats that row:
    a chain that mixes reaches its stationary distribution in a few dozen steps, and a uniform
    start under a doubly stochastic matrix (a cycle) is stationary at once.

    Args:
        log_init: ``(K,)`` log initial distribution.
        trans: ``(K, K)`` transition matrix, rows = from, rows sum to 1.
        T: number of steps.
    """
    p = np.exp(log_init - log_init.max())
    p = p / p.sum()
    out = np.empty((T - start, p.shape[0]))
    if start == 0:
        out[0] = p
    # blocks of L steps: p_{t+l} = p_t A^l from the powers A^1..A^L (one product per block, not a
    # Python step per row); rows normalised as they come, so rounding stays that of one step
    L = min(64, T - 1)
    powers = np.empty((max(L, 1),) + trans.shape)
    if L:
        powers[0] = trans
        for l in range(1, L):
            powers[l] = powers[l - 1] @ trans
    t = 1
    while t < T:
        n = min(L, T - t)
        q = np.einsum("k,lkj->lj", p, powers[:n])
        q /= q.sum(1, keepdims=True)
        lo = max(t, start)
        if lo < t + n:
            out[lo - start:t + n - start] = q[lo - t:]
        prev = np.vstack([p[None], q[:-1]])
        moved = np.abs(q - prev).max(1) <= tol
        if moved.any():                       # stationary from the first row that no longer moves
            i = int(np.argmax(moved))
            out[max(t + i + 1, start) - start:] = q[i]
            break
        t += n
        p = q[-1]
    with np.errstate(divide="ignore"):
        return np.log(out)


def shrunk_transitions(counts: np.ndarray, alpha: float, max_weight: float = 100.0):
    """Transition matrix under a hierarchical prior that shrinks every row towards the marginal.

    Prior: ``A_i ~ Dirichlet(alpha + c pi)`` where ``pi`` is the states' overall frequency and the
    concentration ``c`` is chosen by empirical Bayes (MacKay and Peto 1995; Minka 2000): it
    maximises the Dirichlet-multinomial marginal likelihood of the expected counts,
    ``sum_i log DirMult(n_i | alpha + c pi)``.  Rows that differ from ``pi`` no more than
    multinomial noise give a large ``c`` and rows equal to ``pi`` (a sequence without order sends
    flat messages); a real sequential structure gives ``c`` near 0, i.e. the plain
    ``(n_ij + alpha) / (n_i + K alpha)``.  Returns the posterior mean and ``c``.

    Args:
        counts: ``(K, K)`` expected transition counts, rows = from.
        alpha: pseudo-count added to every entry.
        max_weight: ``c`` is searched up to ``max_weight`` times the number of transitions; an
            optimum there (a prior that outweighs the data a hundredfold) is taken as ``c = inf``.
    Returns:
        ``(A, c)``: ``(K, K)`` rows sum to 1, and the concentration (``inf``: every row is ``pi``).
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import gammaln

    K = counts.shape[0]
    pi = counts.sum(0) + alpha
    pi = pi / pi.sum()
    n_row = counts.sum(1)

    def neg_log_evidence(log_c):
        a = alpha + math.exp(log_c) * pi                          # (K,)
        return -float((gammaln(a.sum()) - gammaln(n_row + a.sum())).sum()
                      + (gammaln(counts + a) - gammaln(a)).sum())

    lo, hi = math.log(1e-6), math.log(max_weight * max(float(n_row.sum()), 1.0))
    res = minimize_scalar(neg_log_evidence, bounds=(lo, hi), method="bounded", options={"xatol": 1e-3})
    log_c = min((lo, res.x, hi), key=neg_log_evidence)
    if log_c >= hi - 1e-3:           # no evidence of order at all: c = infinity, every row is pi
        return np.tile(pi, (K, 1)), math.inf
    c = math.exp(log_c)
    prior = alpha + c * pi
    return (counts + prior) / (n_row[:, None] + prior.sum()), c


def _moment_transitions(log_evidence: np.ndarray, alpha: float) -> np.ndarray:
    """Transition matrix from consecutive evidence: ``A_ij ~ sum_t P_t(i) P_t+1(j) + alpha``.

    In a sharded fit ``log_evidence`` is this rank's steps: the pair across a shard boundary is
    counted by the earlier shard (from the next shard's first row) and the counts are summed over
    the ranks.

    Args:
        log_evidence: ``(T, K)`` unnormalised log-probabilities of the state at each step.
    Returns:
        ``(K, K)`` rows sum to 1.
    """
    P = np.exp(log_evidence - log_evidence.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    _, nxt = _dist.halo_rows(P, 0, 1)                   # empty outside a sharded fit
    Q = np.concatenate([P, nxt]) if len(nxt) else P
    n, = _sum_over_ranks(Q[:-1].T @ Q[1:])
    return (n + alpha) / (n.sum(1, keepdims=True) + P.shape[1] * alpha)


def _sum_over_ranks(*arrays: np.ndarray) -> list[np.ndarray]:
    """numpy float64 arrays summed over the ranks of a sharded fit, in one all-reduce (the arrays
    themselves in one process)."""
    if not _dist.is_sharded():
        return list(arrays)
    return [t.numpy() for t in _dist.all_reduce_tensors([torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
                                                         for a in arrays])]


def _branches(trans, counts, n_rows, min_second):
    """The states with a second branch: ``(p, axis, j, other)`` for each state ``j`` whose second
    most probable successor (``axis=1``, from ``trans``) or predecessor (``axis=0``, from the
    path's transition ``counts``) ``other`` has probability ``p >= min_second``; at most
    ``n_rows`` per axis (a merged state shows two branches after it or before it)."""
    K = trans.shape[0]
    branches = []
    for axis, probs in ((1, trans), (0, (counts / np.maximum(counts.sum(0, keepdims=True), 1)).T)):
        second_of = np.argsort(-probs, axis=1, kind="stable")[:, 1]
        second_p = probs[np.arange(K), second_of]
        for j in np.argsort(-second_p, kind="stable")[:n_rows]:
            if second_p[j] >= min_second:
                branches.append((second_p[j], axis, j, second_of[j]))
    return branches


def _sharded_split_proposals(trans: np.ndarray, log_marginals: np.ndarray, alpha: float,
                             min_second: float = 0.2, n_spare: int = 2, n_rows: int = 3) -> list[np.ndarray]:
    """:func:`_split_proposals` of a chain split over the ranks of a sharded fit: the same
    proposals, from this rank's steps and the path's states at its two neighbours' edges (one
    all-gather), the state use and path transition counts summed over the ranks (one all-reduce)
    and every proposal's relabelled counts summed in one more.  Counts are integers, so the sums
    are exact: every rank, and one process, get the same matrices.  :func:`_split_proposals` in
    one process."""
    if not _dist.is_sharded():
        return _split_proposals(trans, log_marginals, alpha, min_second, n_spare, n_rows)
    K = trans.shape[0]
    if K < 2:
        return []
    path = log_marginals.argmax(1)
    before, after = _dist.halo_rows(path, 2, 1)
    b = len(before)
    ext = np.concatenate([before, path, after])        # global steps start - b .. stop - 1 + len(after)
    own = np.arange(max(b, 1), b + len(path))          # transitions (t - 1, t) into this rank's steps

    def transition_counts(states):
        c = np.zeros((K, K))
        np.add.at(c, (states[own - 1], states[own]), 1.0)
        return c

    use, counts = _sum_over_ranks(np.bincount(path, minlength=K).astype(np.float64), transition_counts(ext))
    spare = np.argsort(use, kind="stable")[:n_spare]
    branches = _branches(trans, counts, n_rows, min_second)
    first_global = _dist.local_rows().start - b        # global step of ext[0]
    last_global = _dist.global_rows(len(path)) - 1
    steps_g = first_global + np.arange(len(ext))
    proposals = []
    for _, axis, j, other in sorted(branches, key=lambda br: -br[0])[:n_rows]:
        flag = np.zeros(len(ext), dtype=bool)
        if axis == 1:   # steps of j followed by `other`
            flag[:-1] = (ext[:-1] == j) & (ext[1:] == other)
            flag &= steps_g < last_global
        else:           # steps of j preceded by `other`
            flag[1:] = (ext[1:] == j) & (ext[:-1] == other)
        for u in spare:
            if u == j:
                continue
            relabelled = ext.copy()
            relabelled[flag] = u
            proposals.append(transition_counts(relabelled))
    if not proposals:
        return []
    summed = _sum_over_ranks(np.stack(proposals))[0]
    return [(c + alpha) / (c.sum(1, keepdims=True) + K * alpha) for c in summed]


def confusion_evidence(log_p: np.ndarray, emission: np.ndarray) -> np.ndarray:
    """``log p(child's message at t | z_t = k) = log sum_j B[k, j] P_t(j)`` up to a constant per ``t``.

    Args:
        log_p: ``(T, K)`` normalised log class probabilities of the child.
        emission: ``(K, J)`` rows sum to 1: ``B[k, j]`` = probability that the child reports class
            ``j`` when the chain is in state ``k``.
    Returns:
        ``(T, K)`` log evidence.
    """
    m = log_p.max(1, keepdims=True)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(log_p - m) @ emission.T) + m


def confusion_counts(log_p: np.ndarray, emission: np.ndarray, log_marginals: np.ndarray,
                     log_evidence: np.ndarray | None = None) -> np.ndarray:
    """Expected counts ``C[k, j] = sum_t p(z_t = k, child's class j | everything)`` (EM for ``B``).

    ``p(z_t = k, j | .) = gamma_t(k) B[k, j] P_t(j) / sum_j' B[k, j'] P_t(j')``; ``(K, J)``.
    ``log_evidence``: :func:`confusion_evidence` of the same ``log_p`` and ``emission`` if the
    caller has it (EM's E-step does), so that ``P B^T`` is computed once per iteration.
    """
    m = log_p.max(1, keepdims=True)
    P = np.exp(log_p - m)
    e = P @ emission.T if log_evidence is None else np.exp(log_evidence - m)   # (T, K)
    gamma = np.exp(log_marginals)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(e > 0, gamma / e, 0.0)
    return emission * (r.T @ P)


def evidence_model_penalty(confusion_counts_per_child, min_count: float = 1.0) -> float:
    """AIC penalty (nats) of the confusion model over the noise model: its extra free parameters,
    counted as the confusions the data show.

    A row of ``B`` has as many free parameters as it has off-diagonal entries in use; an entry
    whose expected count (:func:`confusion_counts`) is below ``min_count`` was never observed and is
    held at its prior (near 0), as a lasso's zero coefficients, whose number of nonzero
    coefficients is its degrees of freedom (Zou, Hastie and Tibshirani 2007).  The noise model
    has one ``eps`` per child; the transitions are common to both and cancel.

    Args:
        confusion_counts_per_child: one ``(K, K)`` array of expected counts per child.
    Returns:
        ``sum_c max(used_c - 1, 0)``.
    """
    total = 0.0
    for C in confusion_counts_per_child:
        C = np.asarray(C, dtype=np.float64)
        off = ~np.eye(C.shape[0], dtype=bool)
        total += max(float((C[off] >= min_count).sum()) - 1.0, 0.0)
    return total


def choose_evidence_model(log_lik_noise: float, log_lik_confusion: float, penalty: float) -> str:
    """``"confusion"`` if its log-likelihood beats the noise model's by more than ``penalty``, its
    extra parameters (:func:`evidence_model_penalty`), else ``"noise"`` (Akaike's criterion).

    AIC estimates the expected log-likelihood of new data, so the choice is the model expected
    to predict the child's next messages better: a child whose mistakes repeat (one digit read
    as another) gains more than the few confusions it uses, a calibrated child's random mistakes
    spread over every entry and gain about nothing.  (BIC's ``log T`` per parameter, or AIC
    counting all ``K (K - 1)`` entries, refuse a sparse ``K = 10`` matrix that the data support.)
    """
    gain = float(log_lik_confusion) - float(log_lik_noise)
    return "confusion" if gain > penalty else "noise"


def noise_emission(eps: float, K: int) -> np.ndarray:
    """The confusion matrix of the robust likelihood: ``(1 - eps) I + eps / K``, ``(K, K)``."""
    return (1.0 - eps) * np.eye(K) + eps / K


def _split_proposals(trans: np.ndarray, log_marginals: np.ndarray, alpha: float,
                     min_second: float = 0.2, n_spare: int = 2, n_rows: int = 3) -> list[np.ndarray]:
    """Split moves for EM over transitions (SMEM, Ueda, Nakano, Ghahramani, Hinton 2000).

    EM cannot move a whole group of time steps to another state at once, so a chain whose child
    merged two classes (state ``j`` followed by ``b1`` or ``b2``) keeps the merge even when an
    unused state ``u`` could carry one branch and make the chain deterministic.  For each of the
    ``n_rows`` states whose second most likely successor (or predecessor) is most probable (at
    least ``min_second``), and every one of the ``n_spare`` least used states, the proposal
    relabels the steps of the most probable path where ``j`` is followed by that successor (or
    preceded by that predecessor) as ``u`` and re-estimates the transitions from the
    relabelled path (plus ``alpha``).  The caller runs EM from each proposal and keeps it only if
    the likelihood increases.

    Args:
        trans: ``(K, K)`` current transition matrix (rows = from).
        log_marginals: ``(T, K)`` smoothed log marginals under ``trans``.
    Returns:
        list of ``(K, K)`` initial transition matrices.
    """
    K = trans.shape[0]
    if K < 2:
        return []
    path = log_marginals.argmax(1)
    use = np.bincount(path, minlength=K)
    spare = np.argsort(use, kind="stable")[:n_spare]
    counts = np.zeros((K, K))
    np.add.at(counts, (path[:-1], path[1:]), 1.0)
    # a merged state shows two branches after it (successors) or before it (predecessors)
    branches = _branches(trans, counts, n_rows, min_second)
    out = []
    for _, axis, j, other in sorted(branches, key=lambda b: -b[0])[:n_rows]:
        if axis == 1:   # steps of j followed by `other`
            steps = np.flatnonzero((path[:-1] == j) & (path[1:] == other))
        else:           # steps of j preceded by `other`
            steps = np.flatnonzero((path[1:] == j) & (path[:-1] == other)) + 1
        for u in spare:
            if u == j:
                continue
            relabelled = path.copy()
            relabelled[steps] = u
            c = np.zeros((K, K))
            np.add.at(c, (relabelled[:-1], relabelled[1:]), 1.0)
            out.append((c + alpha) / (c.sum(1, keepdims=True) + K * alpha))
    return out


# ---------------------------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------------------------
class MarkovModel(Module):
    """Markov chain over a child's classes (Serket's ``MarkovModel``), exact by default.

    Parameters
    ----------
    num_samp : int, default 100
        Number of sampled pairs per time step in ``method="original"``; any other value with another
        method warns (:class:`~serket_pyro.original_api.OriginalArgumentWarning`): the exact method
        needs no samples.
    name : str, default 'mm'
        Short name (``module%03d_<name>``).
    alpha : float, default 0.1
        Dirichlet pseudo-count on every entry of the transition matrix (the original adds 0.1).  Small
        values let the chain become nearly deterministic.
    itr : int, default 100
        Maximum EM iterations of transition learning per :meth:`update`.
    tol : float, default 1e-06
        EM stops when no transition probability (nor ``eps``) moves by more than this.
    evidence_noise : float or {'learn'}, default 'learn'
        ``eps``, the probability that the child's message at a step is noise (robust likelihood
        ``(1 - eps) P_t + eps / K``): ``"learn"`` (default: stage 1 holds it at ``lock_noise``, stage 2
        estimates it by EM) or a fixed float in ``[0, 1)`` (0: the plain HMM).  A fixed 0.9 finds the
        tutorial's cycle but biases everything else: the chain's marginal becomes
        ``pi_k ~ 10 f_k - 0.9`` for class frequencies ``f_k`` (the largest class grows), and the
        transitions come out too deterministic.
    lock_noise : float, default 0.9
        ``eps`` of stage 1 with ``evidence_noise="learn"`` (default 0.9).
    transition_prior : {'shrink', 'flat'}, default 'shrink'
        ``"shrink"`` (default: the refinement uses the hierarchical prior of :func:`shrunk_transitions`)
        or ``"flat"`` (``Dirichlet(alpha)`` rows only).
    evidence_model : {'auto', 'noise', 'confusion'}, default 'auto'
        With ``evidence_noise="learn"``, what stage 2 learns about each child: ``"noise"``, the single
        ``eps`` of the robust likelihood, or ``"confusion"``, a ``(K, K)`` matrix ``B[k, j]``, the
        probability that the child reports class ``j`` in state ``k`` (likelihood
        ``sum_j B[k, j] P_t(j)``; the noise model is ``B = (1 - eps) I + eps / K``).  A child that
        confuses or merges classes systematically is then read through its confusions, not as
        transitions; on a calibrated child some random jumps are read as confusions (the matrix
        comes out too deterministic).  ``"auto"`` (default) fits both and keeps the confusion
        matrix only if its log-likelihood gain exceeds its extra parameters (Akaike's criterion,
        :func:`choose_evidence_model`; metrics ``confusion_model``, ``evidence_gain``).
    emission_prior : float, default 0.1
        Pseudo-count added to every entry of ``B`` in its EM update (no confusion is impossible;
        small, so that the prior's uniform mass does not read as noise).
    restart : bool, default True
        In every update after the first, run EM both from the previous matrix (warm start) and from the
        two fresh starts (uniform, moment), and keep the fit with the higher likelihood.  A warm start
        alone cannot undo a relabelling of the child's classes between updates (a near-deterministic
        matrix then declares most of the evidence noise); ``False`` costs a third.
    max_splits : int, default 10
        After EM, up to this many accepted split moves (:func:`_split_proposals`): a spare state takes
        over one branch of a state with two successors, kept only if the likelihood rises; 0 turns them
        off.
    ll_tol : float, default 1e-07
        EM also stops when an iteration raises the log-likelihood by less than ``ll_tol`` times its
        size and by no more than the iteration before (0: only ``tol``).
    accelerate : bool, default True
        EM with ``eps`` fixed (the structure search) extrapolates its steps (SQUAREM, see
        :meth:`_squarem`), keeping an extrapolation only where the likelihood does not fall.
    method : {'forward_backward', 'original'}, default 'forward_backward'
        ``"forward_backward"`` (exact, default) or ``"original"``.
    category : array_like of int, shape (N,), optional
        Optional ``(N,)`` true labels to score the smoothed marginals.
    device : str or torch.device, optional
        Where the messages live (computation is numpy float64 on the CPU: see
        :mod:`serket_pyro.ops.forward_backward`).
    output_root : str or os.PathLike, optional
        Folder for ``module%03d_mm`` (default the global output root).
    mode : {'learn', 'recog'}, default 'learn'
        ``"learn"``, or ``"recog"`` to keep the learned matrix fixed (file suffix ``_recog``).

    Files (suffix ``_learn`` or ``_recog``) in ``module%03d_mm``: ``msg_learn.txt`` (N x K, to the
    first child; ``msg<i>_learn.txt`` to child ``i``), ``trans_prob_learn.txt`` (K x K, rows =
    from), ``loglik_learn.txt`` (nats), ``evidence_noise_learn.txt``; with ``category`` the
    classification files of the smoothed marginals.

    Notes
    -----
    Learned state: ``trans_prob_`` ``(K, K)`` (rows = from), ``init_prob_`` ``(K,)`` (uniform: one
    sequence says nothing about the initial distribution that is not already the child's own
    evidence at ``t = 0``, which the message to the child must exclude), ``evidence_noise_``,
    ``log_likelihood_`` (nats), ``n_states_``, ``emission_`` ``(children, K, K)`` (rows = state,
    ``evidence_model="confusion"``; ``None`` otherwise; file ``emission_learn.txt``, which holds the noise model's
    ``(1 - eps) I + eps / K`` when ``"auto"`` chose it).
    """

    input_kinds = (ClassProbs,)
    _fitted = ("trans_prob_", "init_prob_", "evidence_noise_", "log_likelihood_", "emission_")
    _state_rules = {"trans_prob_": "probabilities", "init_prob_": "probabilities"}
    test_args = {"itr": 5, "max_splits": 1}
    _original_api = MM_API  # also MarkovModel(num_samp, name, load_dir | mode), the original's order

    def __init__(self, num_samp: int = 100, name: str = "mm", *, alpha: float = 0.1, itr: int = 100,
                 tol: float = 1e-6, evidence_noise="learn", lock_noise: float = 0.9, restart: bool = True,
                 max_splits: int = 10, ll_tol: float = 1e-7, accelerate: bool = True,
                 method: str = "forward_backward", transition_prior: str = "shrink",
                 evidence_model: str = "auto", emission_prior: float = 0.1,
                 category=None, device=None, output_root=None, mode: str = "learn"):
        super().__init__(name, output_root=output_root)
        self.num_samp = check_positive_int(num_samp, "num_samp", self.name)
        self.alpha = check_positive_float(alpha, "alpha", self.name)
        self.itr = check_positive_int(itr, "itr", self.name)
        self.tol = check_positive_float(tol, "tol", self.name, allow_zero=True)
        if isinstance(evidence_noise, str):
            if evidence_noise != "learn":
                raise ValueError(f"{self.name}: evidence_noise must be a number in [0, 1) or 'learn', "
                                 f"got {evidence_noise!r}")
        else:
            e = check_positive_float(evidence_noise, "evidence_noise", self.name, allow_zero=True)
            if e >= 1:
                raise ValueError(f"{self.name}: evidence_noise must be < 1, got {evidence_noise!r}")
            evidence_noise = e
        self.evidence_noise = evidence_noise
        self.lock_noise = check_positive_float(lock_noise, "lock_noise", self.name)
        if not 0 < self.lock_noise < 1:
            raise ValueError(f"{self.name}: lock_noise must be in (0, 1), got {lock_noise!r}")
        self.restart = bool(restart)
        self.max_splits = check_positive_int(max_splits, "max_splits", self.name, minimum=0)
        self.ll_tol = check_positive_float(ll_tol, "ll_tol", self.name, allow_zero=True)
        self.accelerate = bool(accelerate)
        if method not in _METHODS:
            raise ValueError(f"{self.name}: method must be one of {_METHODS}, got {method!r}")
        self.method = method
        if method != "original" and self.num_samp != 100:
            import warnings

            warnings.warn(f"{self.name}: num_samp={self.num_samp} is used only by method='original' (the original's "
                          "sampled transition counts); the default method='forward_backward' computes the exact "
                          "expected counts, the limit of many samples: drop num_samp, or write method='original'",
                          OriginalArgumentWarning, stacklevel=3)
        if transition_prior not in ("shrink", "flat"):
            raise ValueError(f"{self.name}: transition_prior must be 'shrink' or 'flat', got {transition_prior!r}")
        self.transition_prior = transition_prior
        self._check_choice(evidence_model, "evidence_model", ("auto", "noise", "confusion"))
        self.evidence_model = evidence_model
        self.emission_prior = check_positive_float(emission_prior, "emission_prior", self.name)
        self.mode = mode
        self.category = check_category(category, None, self.name)
        self.device = check_device(device)
        self.trans_prob_: torch.Tensor | None = None
        self.init_prob_: torch.Tensor | None = None
        self.evidence_noise_: float | None = None
        self.emission_: torch.Tensor | None = None
        self.log_likelihood_: float | None = None
        self.n_states_: int | None = None
        self.n_em_iter_: int = 0
        self.evidence_gain_: float = float("nan")
        self.evidence_penalty_: float = float("nan")

    # ------------------------------------------------------------------ inputs
    def _read_inputs(self):
        """Validated children's log-probabilities, a list of ``(N, K)`` numpy float64."""
        # class probabilities (input_kinds)
        logs = [msg.log_probs.detach().cpu().to(torch.float64).numpy() for msg in self.get_observations()]
        # a sharded fit: method="forward_backward" keeps this rank's steps (the sharded E-step);
        # the original's sampled pairs run on every rank's steps, gathered (the same on every rank)
        if self.method == "original":
            logs = [_dist.gather_rows(lp) for lp in logs]
        N, K = logs[0].shape
        for child, lp in zip(self.children, logs):
            if lp.shape != (N, K):
                raise ValueError(f"{self.name}: children send different shapes ({child.name}: {lp.shape}, "
                                 f"expected {(N, K)})")
        if _dist.global_rows(N) < 2:
            raise ValueError(f"{self.name}: a Markov model needs at least 2 time steps, got N={N}")
        if self.n_states_ is not None and K != self.n_states_:
            raise ValueError(f"{self.name}: the child now sends K={K} classes, but the Markov model was "
                             f"built for K={self.n_states_}")
        return logs

    def _read_backward(self, logs):
        """The parent's message as ``(N, K)`` numpy log-probabilities, or None."""
        N, K = logs[0].shape
        bias = self.get_backward_msg()
        log_bias = None
        if isinstance(bias, ClassProbs) and _dist.is_sharded() and self.method == "original":
            bias = ClassProbs(_dist.gather_rows(bias.log_probs))
        if bias is not None:
            if not isinstance(bias, ClassProbs) or tuple(bias.log_probs.shape) != (N, K):
                raise ValueError(f"{self.name}: the parent's message must be class probabilities of shape "
                                 f"{(N, K)}, got {bias!r}")
            log_bias = bias.log_probs.detach().cpu().to(torch.float64).numpy()
        return log_bias

    # --------------------------------------------------------------- inference
    @staticmethod
    def _robust(log_p: np.ndarray, eps: float) -> np.ndarray:
        """``log((1 - eps) P + eps / K)`` for normalised ``log_p``."""
        if eps <= 0:
            return log_p
        K = log_p.shape[1]
        return np.logaddexp(np.log1p(-eps) + log_p, math.log(eps / K))

    def _trans_np(self) -> np.ndarray:
        """The learned transition matrix as numpy float64 (EM runs in numpy)."""
        return self.trans_prob_.cpu().numpy().astype(np.float64)

    def _log_init(self, K: int) -> np.ndarray:
        """``(K,)`` log distribution of ``z_0`` (uniform until learned or loaded)."""
        if self.init_prob_ is None:
            return np.full(K, -math.log(K))
        return np.log(self.init_prob_.cpu().numpy().astype(np.float64))

    def _ll_converged(self, gain: float, gain_prev: float, log_lik: float) -> bool:
        """EM's stopping rule on the log-likelihood: the last iteration gained less than
        ``ll_tol * |log-likelihood|`` in absolute value (under the refinement's hierarchical prior
        the likelihood is not the objective and may dip by as little near convergence), and no
        more than the iteration before it, so that the slow start of an escape from a saddle
        (gains growing) is not taken for convergence."""
        return bool(self.ll_tol) and abs(gain) <= min(self.ll_tol * abs(log_lik), abs(gain_prev))

    def _squarem(self, A, noise: float, itr: int, e_step, K: int):
        """EM for the transitions with ``eps`` fixed, accelerated by SQUAREM (Varadhan and Roland
        2008, scheme S3): from ``A0``, ``A1 = F(A0)``, ``A2 = F(A1)`` (``F``: one EM step), the
        extrapolation ``A0 - 2 a r + a^2 v`` (``r = A1 - A0``, ``v = A2 - 2 A1 + A0``,
        ``a = -|r| / |v|``, at most -1) is kept only if the log-likelihood there is at least
        ``A1``'s (otherwise ``A2``, the plain EM step).  Starts near a saddle (the uniform matrix)
        leave it in a few extrapolations instead of dozens of EM steps.

        Returns ``(A, eps, evidence, ForwardBackwardResult, E-steps)`` as ``em``; ``itr`` bounds
        the E-steps.
        """
        alpha, n_e = self.alpha, [0]

        def step(A):
            ev, res = e_step(A, noise)
            n_e[0] += 1
            n = res.trans_counts
            return ev, res, (n + alpha) / (n.sum(1, keepdims=True) + K * alpha)

        def done(P, F, fit, ll_prev, gain_prev):
            gain = fit[1].log_likelihood - ll_prev
            return (float(np.abs(F - P).max()) <= self.tol or n_e[0] >= itr
                    or self._ll_converged(gain, gain_prev, fit[1].log_likelihood)), gain

        P0, (ev0, res0, F0) = A, step(A)
        ll_prev, gain_prev = -math.inf, math.inf
        while True:
            stop, gain = done(P0, F0, (ev0, res0), ll_prev, gain_prev)
            if stop:
                return (P0, noise, ev0, res0, n_e[0])
            ll_prev, gain_prev = res0.log_likelihood, gain
            P1, (ev1, res1, F1) = F0, step(F0)
            stop, gain = done(P1, F1, (ev1, res1), ll_prev, gain_prev)
            if stop:
                return (P1, noise, ev1, res1, n_e[0])
            ll_prev, gain_prev = res1.log_likelihood, gain
            r, v = P1 - P0, F1 - 2.0 * P1 + P0
            nv = float(np.sqrt((v * v).sum()))
            a = -float(np.sqrt((r * r).sum())) / nv if nv > 0 else -1.0
            x = F1
            if a < -1.0:
                for _ in range(4):          # step back towards the plain EM step if it leaves the simplex
                    x = P0 - 2.0 * a * r + a * a * v
                    if x.min() > 0:
                        break
                    a = (a - 1.0) / 2.0
                else:
                    x = np.clip(x, 1e-12, None)
                x = x / x.sum(1, keepdims=True)
            if x is F1:
                P0, (ev0, res0, F0) = F1, step(F1)
                continue
            evx, resx, Fx = step(x)
            if resx.log_likelihood >= res1.log_likelihood:
                P0, ev0, res0, F0 = x, evx, resx, Fx
            else:                           # the extrapolation lost: the plain EM step
                P0, (ev0, res0, F0) = F1, step(F1)

    def _fit_forward_backward(self, logs, log_bias, K):
        """EM for the transition matrix (and ``eps``); returns the chosen fit's
        ``(A, eps, robust evidence per child, ForwardBackwardResult, EM iterations)``."""
        log_init = self._log_init(K)
        extra = log_bias if log_bias is not None else 0.0
        learn_eps = self.evidence_noise == "learn"
        eps_fresh = self.lock_noise if learn_eps else float(self.evidence_noise)
        uniform = np.full((K, K), 1.0 / K)

        # the children's noise: a float eps (robust likelihood) or a list of (K, K) confusion
        # matrices, one per child (evidence_model="confusion", learned in stage 2)
        robust = {}                        # eps -> robust evidence: stage 1 holds eps fixed

        def e_step(A, noise):
            if isinstance(noise, float):
                if noise not in robust:
                    if len(robust) > 4:
                        robust.clear()
                    robust[noise] = [self._robust(lp, noise) for lp in logs]
                ev = robust[noise]
            else:
                ev = [confusion_evidence(lp, B) for lp, B in zip(logs, noise)]
            # a sharded fit: this rank's steps, boundary messages exchanged; the whole chain's
            # likelihood and transition counts (the same on every rank)
            return ev, sharded_forward_backward(log_init, np.log(A), sum(ev) + extra)

        if self.mode == "recog":
            A = self._trans_np()
            noise = (float(self.evidence_noise_ or 0.0) if self.emission_ is None
                     else list(self.emission_.cpu().numpy().astype(np.float64)))
            return (A, noise, *e_step(A, noise), 0)

        def em(A, noise, itr=None, learn=learn_eps, shrink=False):
            if self.accelerate and not learn and not shrink and isinstance(noise, float):
                return self._squarem(A, noise, itr or self.itr, e_step, K)
            n_iter = 0
            ll_prev, gain_prev = -math.inf, math.inf
            for n_iter in range(1, (itr or self.itr) + 1):
                ev, res = e_step(A, noise)
                n = res.trans_counts
                if shrink:
                    A_new, _ = shrunk_transitions(n, self.alpha)
                else:
                    A_new = (n + self.alpha) / (n.sum(1, keepdims=True) + K * self.alpha)
                noise_new, moved = noise, 0.0
                if learn and isinstance(noise, float) and noise > 0:
                    gamma = np.exp(res.log_marginals)
                    # p(r_ct = 1 | all evidence) = sum_k gamma_t(k) (eps / K) / l_ct(k)
                    if _dist.is_sharded():  # the mean over every rank's steps
                        part = sum(float((gamma * np.exp(math.log(noise / K) - e)).sum()) for e in ev)
                        noise_new = _dist.all_reduce_scalar(part) / (len(ev) * _dist.global_rows(len(gamma)))
                    else:
                        noise_new = float(np.mean([(gamma * np.exp(math.log(noise / K) - e)).sum(1) for e in ev]))
                    moved = abs(noise_new - noise)
                elif learn and not isinstance(noise, float):
                    a = self.emission_prior
                    noise_new = []
                    Cs = _sum_over_ranks(*[confusion_counts(lp, B, res.log_marginals, e)
                                            for lp, B, e in zip(logs, noise, ev)])
                    for C in Cs:
                        noise_new.append((C + a) / (C.sum(1, keepdims=True) + C.shape[1] * a))
                    moved = max(float(np.abs(Bn - B).max()) for Bn, B in zip(noise_new, noise))
                delta = max(float(np.abs(A_new - A).max()), moved)
                gain, ll_prev = res.log_likelihood - ll_prev, res.log_likelihood
                if self._ll_converged(gain, gain_prev, res.log_likelihood):
                    return (A, noise, ev, res, n_iter)      # this E-step is the fit of A
                gain_prev = gain
                A, noise = A_new, noise_new
                if delta <= self.tol:
                    break
            return (A, noise, *e_step(A, noise), n_iter)

        def search(eps0, learn):
            """EM from the warm and fresh starts, then split moves; the most probable fit."""
            fits = []
            if self.trans_prob_ is not None:                               # warm start
                eps_warm = self.evidence_noise_ if learn and self.evidence_noise_ else eps0
                fits.append(em(self._trans_np(), eps_warm, learn=learn))
            if self.trans_prob_ is None or self.restart:
                fits.append(em(uniform, eps0, learn=learn))
                # the child's own transition statistics n_ij = sum_t P_t(i) P_t+1(j) on the raw (not
                # robust) evidence: from uniform, the first E-step sees them through the noise eps and
                # EM can settle in a cycle of half the period (measured on the VAE+GMM+MLDA+MM tutorial)
                fits.append(em(_moment_transitions(sum(logs) + extra, self.alpha), eps0, learn=learn))
            # keep the fit under which the evidence is most probable (the first one on ties)
            best = max(fits, key=lambda f: f[3].log_likelihood)
            for _ in range(self.max_splits):
                # screen the proposals with a few EM steps, finish only the best one
                screened = [em(A0, best[1], itr=10, learn=learn)
                            for A0 in _sharded_split_proposals(best[0], best[3].log_marginals, self.alpha)]
                if not screened:
                    break
                challenger = max(screened, key=lambda f: f[3].log_likelihood)
                challenger = em(challenger[0], challenger[1], learn=learn)
                if challenger[3].log_likelihood <= best[3].log_likelihood + self.tol:
                    break
                best = challenger
            return best

        # 1. find the structure: EM with the flat prior alpha from every start, eps held at
        #    evidence_noise (or lock_noise), where a cycle that the child's merged or split classes
        #    blur is still the most probable chain
        found = search(eps_fresh, learn=False)
        shrink = self.transition_prior == "shrink"
        if not (learn_eps or shrink):
            return found
        # 2. refine it: EM from there with the hierarchical prior (rows without evidence of order
        #    shrink to the marginal) and, with evidence_noise="learn", eps learned (a local optimum
        #    that keeps the structure and makes the transition estimates unbiased); the warm
        #    start's refined fit competes with it
        confusion = None
        if learn_eps and self.evidence_model in ("confusion", "auto"):
            # stage 2 learns a confusion matrix per child instead of one eps: which class the
            # child reports in each state (merged or swapped classes included), started from
            # the stage-1 noise; the warm start continues the previous update's matrices
            fits = [em(found[0], [noise_emission(found[1], K)] * len(logs), shrink=shrink)]
            if self.trans_prob_ is not None and self.emission_ is not None:
                fits.insert(0, em(self._trans_np(), list(self.emission_.cpu().numpy().astype(np.float64)),
                                  shrink=shrink))
            confusion = max(fits, key=lambda f: f[3].log_likelihood)
            if self.evidence_model == "confusion":
                return confusion
        fits = [em(found[0], found[1], shrink=shrink)]
        if learn_eps and self.trans_prob_ is not None and self.evidence_noise_:
            fits.insert(0, em(self._trans_np(), self.evidence_noise_,
                              shrink=shrink))
        noise = max(fits, key=lambda f: f[3].log_likelihood)
        if confusion is None:
            return noise
        # evidence_model="auto": the confusion matrix only if it pays for its parameters
        self.evidence_gain_ = confusion[3].log_likelihood - noise[3].log_likelihood
        counts = _sum_over_ranks(*[confusion_counts(lp, B, confusion[3].log_marginals, e)
                                   for lp, B, e in zip(logs, confusion[1], confusion[2])])
        self.evidence_penalty_ = evidence_model_penalty(counts)
        chosen = choose_evidence_model(noise[3].log_likelihood, confusion[3].log_likelihood, self.evidence_penalty_)
        return confusion if chosen == "confusion" else noise

    # ------------------------------------------------------------------ hooks
    def _infer(self, logs, log_bias) -> None:
        """Learn the transitions from the child's current message (and the messages with them)."""
        self._fit(logs, log_bias)

    def _recognise(self, logs, log_bias) -> None:
        """The messages under the learned (frozen) transitions."""
        if self.trans_prob_ is None:
            raise ValueError(f"{self.name}: mode='recog' needs a learned transition matrix "
                             "(update in mode='learn' first or load_state_dict)")
        self._fit(logs, log_bias)

    def _fit(self, logs, log_bias) -> None:
        K = logs[0].shape[1]
        dev = self.device
        self.evidence_gain_ = self.evidence_penalty_ = float("nan")
        if self.method == "forward_backward":
            A, noise, ev, res, n_iter = self._fit_forward_backward(logs, log_bias, K)
            self.n_em_iter_ = n_iter
            # p(other steps' evidence | z_t): the leave-one-out posterior over the prior marginal.
            # The child applies its own class prior (a GMM's weights, an MLDA's theta); a chain
            # with identical rows (no sequential structure) then sends a flat message instead
            # of its marginal, which the child would count a second time.
            rows = _dist.local_rows()  # a sharded fit: this rank's steps of the chain
            start = rows.start or 0
            log_prior = prior_marginals(self._log_init(K), A, start + len(res.log_loo), start=start)
            log_rest = res.log_loo if log_bias is None else res.log_loo + log_bias
            up = ClassProbs(torch.from_numpy(res.log_loo + sum(ev)).to(dev))
            # child c: everything at t except its own evidence (a sum, not a difference: -inf safe)
            # The child's class is the chain's state (the chain is a prior over it): the noise or
            # confusion model says how far to trust the child's evidence when learning the chain,
            # and the message is on the shared state, at full strength
            down = [ClassProbs(torch.from_numpy(log_rest - log_prior + sum(e for j, e in enumerate(ev) if j != c))
                               .to(dev)) for c in range(len(ev))]
            if isinstance(noise, float):
                eps, self.emission_ = noise, None
            else:
                self.emission_ = torch.from_numpy(np.stack(noise))
                eps = float(np.mean([K / (K - 1) * (1.0 - np.diag(B).mean()) for B in noise])) if K > 1 else 0.0
            log_lik = res.log_likelihood
            post = np.exp(res.log_marginals)
        else:
            probs = torch.from_numpy(np.exp(sum(logs)))
            probs = probs / probs.sum(1, keepdim=True)
            if self.mode == "learn":
                A = original_transitions(probs, self.num_samp).numpy()
            else:
                A = self._trans_np()
            bias = None if log_bias is None else torch.from_numpy(np.exp(log_bias))
            msg = original_message(probs, torch.from_numpy(A), bias)
            up = ClassProbs.from_probs(msg.to(dev))
            down = [up] * len(self.children)
            eps = 0.0
            with np.errstate(divide="ignore"):
                res = forward_backward(np.full(K, -math.log(K)), np.log(A), sum(logs))
            log_lik = res.log_likelihood
            post = msg.numpy()
            self.n_em_iter_ = 0
        if _dist.is_sharded() and self.method == "original":  # this rank's steps of the messages
            rows = _dist.local_rows()
            up, down, post = ClassProbs(up.log_probs[rows]), [ClassProbs(d.log_probs[rows]) for d in down], post[rows]
        self._up, self._down, self._post = up, down, post
        self.trans_prob_ = torch.from_numpy(np.ascontiguousarray(A))
        if self.init_prob_ is None:
            self.init_prob_ = torch.full((K,), 1.0 / K, dtype=torch.float64)
        self.evidence_noise_ = float(eps)
        self.log_likelihood_ = float(log_lik)
        self.n_states_ = K

    def _forward_message(self, logs, log_bias) -> ClassProbs:
        """The smoothed marginals (every step's evidence and the chain)."""
        return self._up

    def _backward_messages(self, logs, log_bias) -> list:
        """To child ``c``: everything at each step but ``c``'s own evidence (leave-one-out)."""
        return self._down

    def _class_probs(self, logs, log_bias):
        return None if self.category is None else self._post

    def _write_outputs(self, w, logs, log_bias) -> None:
        mode = self.mode
        for i, m in enumerate(self._down):
            w.savetxt(f"msg{i if i else ''}_{mode}.txt", m.probs.cpu().numpy())
        w.savetxt(f"trans_prob_{mode}.txt", self.trans_prob_.numpy())
        w.savetxt(f"loglik_{mode}.txt", np.array([self.log_likelihood_]))
        if self.method == "forward_backward":
            w.savetxt(f"evidence_noise_{mode}.txt", np.array([self.evidence_noise_]))
        if self.emission_ is not None:
            for i, B in enumerate(self.emission_.numpy()):
                w.savetxt(f"emission{i if i else ''}_{mode}.txt", B)
        elif self.method == "forward_backward" and self.evidence_model != "noise":
            # the noise model as its confusion matrix: the same files whichever model "auto" chose
            K = self.trans_prob_.shape[0]
            for i in range(len(self.children)):
                w.savetxt(f"emission{i if i else ''}_{mode}.txt", noise_emission(float(self.evidence_noise_ or 0.0), K))

    def _metrics(self, logs, log_bias) -> dict:
        return {"log_likelihood": self.log_likelihood_, "objective": self.log_likelihood_,
                "evidence_noise": self.evidence_noise_, "em_iterations": float(self.n_em_iter_),
                "confusion_model": float(self.emission_ is not None), "evidence_gain": self.evidence_gain_,
                "evidence_penalty": self.evidence_penalty_}

    # ------------------------------------------------------------- Pyro model
    def model(self, log_evidence=None, trans_prob=None) -> None:
        """This module's generative model (:func:`markov_model`) with its hyperparameters; by default
        on the children's current messages.  ``trans_prob`` conditions the ``trans_prob`` site."""
        if log_evidence is None:
            log_evidence = [m.log_probs for m in self.get_observations()]
        eps = self.evidence_noise_ if self.evidence_noise == "learn" else self.evidence_noise
        fn = markov_model
        if trans_prob is not None:
            fn = pyro.poutine.condition(markov_model, data={"trans_prob": torch.as_tensor(trans_prob)})
        bias = self.get_backward_msg()
        fn(log_evidence, self.alpha, None, float(eps or 0.0),
           None if bias is None else bias.log_probs, self.emission_)

    # ------------------------------------------------------------ joint hooks
    joint_role = "chain"

    def joint_params(self, child_sizes, child_values, parent_states) -> dict:
        """``trans_prob (K, K)`` (rows = from): the fitted matrix when there is one of the right
        size, else near-uniform rows broken by a little noise (a uniform matrix is a saddle)."""
        from torch.distributions import constraints

        if len(child_sizes) != 1:
            raise ValueError(f"{self.name}: the joint program needs exactly one child of a Markov model, "
                             f"got {len(child_sizes)}")
        K = int(child_sizes[0])
        if self.trans_prob_ is not None and tuple(self.trans_prob_.shape) == (K, K):
            A = self.trans_prob_.double().cpu().clamp_min(1e-6)
        else:
            A = 1.0 + 0.1 * torch.rand(K, K, dtype=torch.float64)
        return {"trans_prob": (A / A.sum(-1, keepdim=True), constraints.simplex)}

    def joint_init_log_prob(self, params) -> torch.Tensor:
        """``log p(z_0)``: uniform, as ``init_prob_`` (see the class notes)."""
        K = params["trans_prob"].shape[-1]
        A = params["trans_prob"]
        return torch.full((K,), -math.log(K), dtype=A.dtype, device=A.device)

    def joint_to_module(self, params, posterior) -> None:
        """``trans_prob_``, uniform ``init_prob_``, ``evidence_noise_`` 0 (the joint chain reads
        its child exactly), ``n_states_``."""
        A = params["trans_prob"].detach().cpu().double()
        self.trans_prob_ = A / A.sum(-1, keepdim=True)
        K = A.shape[0]
        self.init_prob_ = torch.full((K,), 1.0 / K, dtype=torch.float64)
        self.evidence_noise_ = 0.0 if self.evidence_noise == "learn" else float(self.evidence_noise)
        self.n_states_ = K
        self.emission_ = None
        self.log_likelihood_ = float("nan")

    # --------------------------------------------------------------- state I/O
    def _check_state(self, values: dict) -> dict:
        """Square ``trans_prob`` (required; rows on the simplex: ``_state_rules``), ``init_prob``
        (default uniform), finite ``evidence_noise >= 0`` (default 0); ``n_states_`` follows."""
        if values["trans_prob_"] is None:
            raise ValueError(f"{self.name}: state dict lacks 'trans_prob'")
        A = torch.as_tensor(values["trans_prob_"], dtype=torch.float64)
        if A.dim() != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"{self.name}: trans_prob must be square (K, K), got {tuple(A.shape)}")
        K = A.shape[0]
        if self.n_states_ is not None and K != self.n_states_:
            raise ValueError(f"{self.name}: state has K={K}, this module has K={self.n_states_}")
        init = values["init_prob_"]
        init = torch.as_tensor(torch.full((K,), 1.0 / K) if init is None else init, dtype=torch.float64)
        if tuple(init.shape) != (K,):
            raise ValueError(f"{self.name}: init_prob must have shape ({K},), got {tuple(init.shape)}")
        noise = values["evidence_noise_"]
        noise = 0.0 if noise is None else float(noise)
        if not math.isfinite(noise) or noise < 0:
            raise ValueError(f"{self.name}: loaded evidence_noise must be finite and >= 0, got {noise}")
        ll = values["log_likelihood_"]
        emission = values.get("emission_")
        if emission is not None:
            emission = torch.as_tensor(emission, dtype=torch.float64)
            if emission.dim() != 3 or tuple(emission.shape[1:]) != (K, K):
                raise ValueError(f"{self.name}: emission must have shape (children, {K}, {K}), "
                                 f"got {tuple(emission.shape)}")
            for B in emission:
                check_loaded_probabilities(B, "emission", self.name)
            emission = emission.clone()
        return {"trans_prob_": A.clone(), "init_prob_": init.clone(), "evidence_noise_": noise,
                "log_likelihood_": float("nan") if ll is None else float(ll), "n_states_": K,
                "emission_": emission}
