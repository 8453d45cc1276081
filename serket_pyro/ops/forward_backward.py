"""Exact inference in a first-order Markov chain with per-step evidence: forward-backward and Viterbi.

L. E. Baum, T. Petrie, G. Soules, N. Weiss, "A maximization technique occurring in the statistical
analysis of probabilistic functions of Markov chains", Ann. Math. Statist. 41 (1970);
L. R. Rabiner, "A tutorial on hidden Markov models and selected applications in speech
recognition", Proc. IEEE 77 (1989), section III (the scaled recursions used here).

The chain has ``K`` states; ``z_0 ~ init``, ``z_t | z_{t-1} ~ trans[z_{t-1}]`` and step ``t`` carries
evidence ``e_t(k) = p(y_t | z_t = k)`` (any non-negative likelihood, e.g. the class probabilities a
child module sends up).  Everything enters and leaves in log space; inside, the recursions run on
probabilities renormalised between chunks of steps and kept inside ``[1e-100, 1e100]`` within them
(Rabiner's scaling, by chunks), which is exact, cannot underflow over the length of the chain, and
is several times faster than a ``logsumexp`` at every step.  Per-step evidence is shifted by its row maximum before exponentiation, so evidence with a
dynamic range up to ~700 nats per step is handled exactly.

Backend: numpy float64 and LAPACK.  The per-step work is a ``(K,) @ (K, K)`` product, far too small
for a Python-level loop (per-call overhead) or for torch: :func:`forward_backward` solves a chunk of
steps at a time as one banded triangular system (``scipy.linalg.lapack.dtbtrs``), so the recursion
runs in compiled code.  It takes numpy arrays or torch tensors and always returns **numpy float64
arrays**; :func:`forward_backward_torch` is the same recursion step by step in torch (returns torch
tensors), for callers that need autograd.  ``benchmarks/mm_speed.py --vs-hmmlearn`` compares both
with hmmlearn's compiled scaling recursion.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
import torch
from scipy.linalg.lapack import dtbtrs

__all__ = ["ForwardBackwardResult", "forward_backward", "forward_backward_torch", "viterbi"]


class ForwardBackwardResult(NamedTuple):
    """Output of :func:`forward_backward` (numpy float64) or :func:`forward_backward_torch`.

    Attributes:
        log_likelihood: ``log p(e_0, ..., e_{T-1})`` (nats, a float).
        log_marginals: ``(T, K)`` smoothed marginals ``log p(z_t | e_{0:T})``, rows normalised.
        trans_counts: ``(K, K)`` expected transition counts
            ``sum_{t=1}^{T-1} p(z_{t-1} = i, z_t = j | e_{0:T})`` (rows = from; the entries sum to
            ``T - 1``).
        log_loo: ``(T, K)`` leave-one-out messages ``log p(z_t | e_s, s != t)``, rows normalised:
            what the rest of the chain says about ``z_t`` without step ``t``'s own evidence.
    """

    log_likelihood: float
    log_marginals: np.ndarray
    trans_counts: np.ndarray
    log_loo: np.ndarray


def _np64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check(log_init, log_trans, log_obs):
    if log_obs.ndim != 2:
        raise ValueError(f"log_obs must be 2-D (T, K), got shape {tuple(log_obs.shape)}")
    T, K = log_obs.shape
    if T == 0 or K == 0:
        raise ValueError(f"log_obs must be non-empty, got shape {tuple(log_obs.shape)}")
    if tuple(log_init.shape) != (K,):
        raise ValueError(f"log_init must have shape ({K},), got {tuple(log_init.shape)}")
    if tuple(log_trans.shape) != (K, K):
        raise ValueError(f"log_trans must have shape ({K}, {K}), got {tuple(log_trans.shape)}")
    for name, a in (("log_init", log_init), ("log_trans", log_trans), ("log_obs", log_obs)):
        if np.isnan(a).any() or (a == np.inf).any():
            raise ValueError(f"{name} contains NaN or +inf")
    if not np.isfinite(log_obs.max(axis=1)).all():
        t = int(np.flatnonzero(~np.isfinite(log_obs.max(axis=1)))[0])
        raise ValueError(f"log_obs row {t} is -inf for every state (evidence impossible)")
    return T, K


def _check_obs(log_init, log_trans, log_obs):
    """:func:`_check` with one pass over ``log_obs``: its row maxima, which a NaN or an infinity
    in the row propagates to, are returned for the shift."""
    if log_obs.ndim != 2:
        raise ValueError(f"log_obs must be 2-D (T, K), got shape {tuple(log_obs.shape)}")
    T, K = log_obs.shape
    if T == 0 or K == 0:
        raise ValueError(f"log_obs must be non-empty, got shape {tuple(log_obs.shape)}")
    _check(log_init, log_trans, log_obs[:1])
    m = log_obs.max(axis=1)
    if np.isnan(m).any() or (m == np.inf).any():
        raise ValueError("log_obs contains NaN or +inf")
    if (m == -np.inf).any():
        raise ValueError(f"log_obs row {int(np.flatnonzero(m == -np.inf)[0])} is -inf for every state "
                         "(evidence impossible)")
    return T, K, m


_LO, _HI = 1e-100, 1e100
_buffers = threading.local()


def _band_buffers(K: int, L: int) -> tuple[np.ndarray, np.ndarray]:
    """Two ``(2K, L K)`` Fortran-order arrays, kept per thread between calls: a fresh allocation
    of this size costs more than a short chain's whole recursion (page faults)."""
    key = (K, L)
    if getattr(_buffers, "key", None) != key:
        _buffers.key = key
        _buffers.arrays = tuple(np.empty((L * K, 2 * K)).T for _ in range(2))
    return _buffers.arrays          # row masses kept inside this range between renormalisations


def forward_backward(log_init, log_trans, log_obs, *, rescale_every: int = 256) -> ForwardBackwardResult:
    """Scaled forward-backward (Baum et al. 1970; Rabiner 1989) for one chain, numpy float64.

    The recursions run in chunks of up to ``rescale_every`` steps; a chunk is one banded triangular
    linear system in its ``L K`` unknowns, solved by LAPACK (``dtbtrs``), so the per-step loop runs
    in compiled code rather than in Python:

    - forward: ``x_t / e_t - A^T x_{t-1} = 0`` (``x_t`` proportional to ``alpha_t``);
    - backward: ``v_t / e_t - A v_{t+1} = 0`` with ``v_t = e_t beta_t``: the transposed system.

    The band holds ``-A`` (the same for every chunk) and the diagonal ``1 / e_t`` (``1 / 0 = inf``
    solves to 0).  Memory is ``O(T K)``: no ``T x K x K`` products are kept, and the expected
    transition counts are one ``(K, T) @ (T, K)`` product.

    Args:
        log_init: ``(K,)`` log initial distribution.  Unnormalised values are used as given (they
            then act as extra evidence on ``z_0`` and enter the likelihood).
        log_trans: ``(K, K)`` log transition matrix, ``log_trans[i, j] = log p(z_t = j | z_{t-1} = i)``
            (rows = from; rows are expected to sum to one).
        log_obs: ``(T, K)`` per-step log evidence ``log p(y_t | z_t = k)``; ``-inf`` allowed, but
            every row needs a finite entry.
        rescale_every: the forward and backward vectors are renormalised at least every this many
            steps (Rabiner's scaling; 1 = every step); default 256.  Within a chunk the forward
            vectors are damped by the previous chunk's mean normaliser, the backward ones by the
            forward normalisers (Rabiner's scaled beta); a chunk whose row masses leave
            ``[1e-100, 1e100]`` is cut where they do and continued from there (one step at a time
            where needed), so the result is the same to rounding error for any evidence.

    Returns:
        :class:`ForwardBackwardResult` with numpy float64 arrays.

    Raises:
        ValueError: bad shapes, NaN, a row of impossible evidence, or evidence that has probability
            zero under the chain (``log_likelihood`` would be ``-inf``).
    """
    log_init, log_trans, log_obs = _np64(log_init), _np64(log_trans), _np64(log_obs)
    T, K, m = _check_obs(log_init, log_trans, log_obs)
    Lmax = max(int(rescale_every), 1)
    A = np.exp(log_trans)
    init = np.exp(log_init)
    obs = np.subtract(log_obs, m[:, None], out=np.empty((T, K)))   # C order; row maxima 1
    np.exp(obs, out=obs)
    ones = np.ones(K)

    # band storage, kd = 2K - 1.  Forward (LAPACK lower): column (l, i) holds 1 / e_l(i) in row 0 and
    # -A[i, i + d] in row K + d, the coefficient of x_l(i) in the equation of x_{l+1}(i + d).
    # Backward (upper, the transpose): column (l, j) holds -A[j - d, j] in row K - 1 - d, the
    # coefficient of v_l(j) in the equation of v_{l-1}(j - d), and 1 / e_l(j) in row 2K - 1.
    Lc = min(Lmax, T, max(4096 // K, 1))                    # band buffers O(K^2 Lc) <= O(4096 K)
    Lmax = Lc
    band = np.zeros((2 * K, K))
    band_t = np.zeros((2 * K, K))
    for d in range(1 - K, K):
        i = np.arange(max(0, -d), min(K, K - d))
        band[K + d, i] = -A[i, i + d]
        band_t[K - 1 - d, i + d] = -A[i, i + d]
    ab, ab_t = _band_buffers(K, Lc)                          # (2K, Lc K), Fortran order
    ab.T.reshape(Lc, K, 2 * K)[:] = band.T
    ab_t.T.reshape(Lc, K, 2 * K)[:] = band_t.T
    with np.errstate(divide="ignore", over="ignore"):  # e = 0 or subnormal: an infinite diagonal
        inv = np.divide(1.0, obs, out=np.empty((T, K)))      # (T, K) diagonals 1 / e_t

    def solve(out, t0, L, rhs, diag_scale, backward):
        """Unknowns of steps t0..t0+L-1, written to out[t0:t0+L]; rhs enters the first (forward)
        or last (backward) step."""
        N = L * K
        a = ab_t[:, :N] if backward else ab[:, :N]
        np.multiply(inv[t0:t0 + L], diag_scale, out=a[-1 if backward else 0].reshape(L, K))
        x = out[t0:t0 + L]
        x.fill(0.0)
        x[-1 if backward else 0] = rhs
        dtbtrs(a, x.reshape(N, 1), uplo="U" if backward else "L", diag="N", overwrite_b=1)
        s = x @ ones
        lo, hi = s.min(), s.max()
        if lo > _LO and hi < _HI:
            return s, L
        ok = (s > _LO) & (s < _HI)                           # cut where a row mass leaves the range
        return s, int(ok.argmin()) if not backward else L - 1 - int(ok[::-1].argmin())

    # forward: alpha[t] proportional to p(z_t | e_{0:t+1}) (each row has its own scale, removed
    # below by normalising rows); cum[t] = log p(e_{0:t+1}) up to the shift m
    alpha = np.empty((T, K))
    cum = np.empty(T)
    a0 = init * obs[0]
    s0 = a0.sum()
    if not s0 > 0:
        raise ValueError("evidence at step 0 has probability zero under the initial distribution")
    alpha[0] = a0 / s0
    base = cum[0] = np.log(s0)
    steps = np.arange(1.0, Lmax + 1.0)
    t0, L, lg = 1, min(64, Lmax), 0.0                        # lg: damping, log per step
    while t0 < T:
        L = min(L, T - t0)
        prev = alpha[t0 - 1]
        p0 = (prev @ A) / prev.sum()
        s, n = solve(alpha, t0, L, p0, np.exp(-lg), False)   # rows scaled by exp(lg (l + 1))
        if n == 0:                                           # one step, renormalised
            a0 = p0 * obs[t0]
            s0 = a0.sum()
            if not s0 > 0:
                raise ValueError(f"evidence at step {t0} has probability zero under the chain")
            alpha[t0] = a0 / s0
            base = cum[t0] = base + np.log(s0)
            t0, L = t0 + 1, 1
            continue
        ls = np.log(s[:n])
        ls -= lg * steps[:n]
        np.add(ls, base, out=cum[t0:t0 + n])
        base = cum[t0 + n - 1]
        lg = -ls[-1] / n
        t0 += n
        L = min(2 * L, Lmax) if n == L else n
    log_lik = float(base + m.sum())

    # backward on evidence divided by the forward normalisers: v_t = e_t beta_t / c_t
    c = np.exp(np.diff(cum, prepend=0.0))
    v = np.empty((T, K))
    v[T - 1] = obs[T - 1] / c[T - 1]
    t1, L = T - 1, Lmax
    while t1 > 0:
        L = min(L, t1)
        t0 = t1 - L
        s, n = solve(v, t0, L, A @ v[t1], c[t0:t1, None], True)
        if n == 0:
            b1 = obs[t1 - 1] * (A @ v[t1])
            sb = b1.sum()
            if not sb > 0:
                raise ValueError(f"evidence at step {t1} has probability zero under the chain")
            v[t1 - 1] = b1 / sb
            t1, L = t1 - 1, 1
            continue
        t1 -= n                                              # rows t1 - n .. t1 - 1 accepted
        L = min(2 * L, Lmax) if n == L else n

    # each row below has its own positive scale, removed by normalising the row
    beta = inv                                               # buffer reused: beta_t = A v_{t+1}
    np.dot(v[1:], A.T, out=beta[:-1])
    beta[-1] = 1.0
    pred = obs                                               # buffer reused: p(z_t | e_{0:t}), to scale
    pred[0] = init
    np.dot(alpha[:-1], A, out=pred[1:])
    # xi_t(i, j) = alpha_{t-1}(i) A(i, j) v_t(j) / z_t, summed over t = 1..T-1 on the fly
    z = np.einsum("tk,tk->t", pred[1:], v[1:])
    with np.errstate(divide="ignore"):
        np.einsum("tk,t->tk", v[1:], 1.0 / z, out=v[1:])
        counts = A * np.dot(alpha[:-1].T, v[1:])
        del v
        alpha *= beta
        np.einsum("tk,t->tk", alpha, 1.0 / (alpha @ ones), out=alpha)
        log_marg = np.log(alpha, out=alpha)
        pred *= beta
        np.einsum("tk,t->tk", pred, 1.0 / (pred @ ones), out=pred)
        log_loo = np.log(pred, out=pred)
    return ForwardBackwardResult(log_lik, log_marg, counts, log_loo)


def forward_backward_torch(log_init: torch.Tensor, log_trans: torch.Tensor,
                           log_obs: torch.Tensor) -> ForwardBackwardResult:
    """The same scaled recursion as :func:`forward_backward` in torch (same device and dtype as
    ``log_obs``; differentiable).  Returns torch tensors (``log_likelihood`` a 0-d tensor).

    Slower than the numpy version on CPU for small ``K`` (per-call overhead); see
    ``benchmarks/mm_speed.py``.  No input checks beyond shapes.
    """
    T = log_obs.shape[0]
    log_init = log_init.to(log_obs)
    log_trans = log_trans.to(log_obs)
    A = log_trans.exp()
    shift = log_obs.max(-1, keepdim=True).values
    obs = (log_obs - shift).exp()
    init = log_init.exp()
    alphas, preds, cs = [], [init], []
    a = init * obs[0]
    s = a.sum()
    alphas.append(a / s)
    cs.append(s)
    for t in range(1, T):
        p = alphas[-1] @ A
        preds.append(p)
        a = p * obs[t]
        s = a.sum()
        cs.append(s)
        alphas.append(a / s)
    alpha, pred, c = torch.stack(alphas), torch.stack(preds), torch.stack(cs)
    ob = obs / c[:, None]
    betas = [torch.ones_like(init)]
    for t in range(T - 1, 0, -1):
        betas.append(A @ (ob[t] * betas[-1]))
    beta = torch.stack(betas[::-1])
    log_lik = c.log().sum() + shift.sum()
    gamma = alpha * beta
    log_marg = (gamma / gamma.sum(-1, keepdim=True)).log()
    counts = A * (alpha[:-1].T @ (ob[1:] * beta[1:]))
    loo = pred * beta
    log_loo = (loo / loo.sum(-1, keepdim=True)).log()
    return ForwardBackwardResult(log_lik, log_marg, counts, log_loo)


def viterbi(log_init, log_trans, log_obs) -> tuple[np.ndarray, float]:
    """Most probable state sequence (Viterbi 1967; Rabiner 1989, section III.B), in log space.

    Args: as :func:`forward_backward`.

    Returns:
        ``(path, log_prob)``: ``path`` ``(T,)`` int64 states and the joint log-probability
        ``log p(path, e_{0:T})``.
    """
    log_init, log_trans, log_obs = _np64(log_init), _np64(log_trans), _np64(log_obs)
    T, K = _check(log_init, log_trans, log_obs)
    back = np.empty((T, K), dtype=np.int64)
    delta = log_init + log_obs[0]
    for t in range(1, T):
        scores = delta[:, None] + log_trans                  # (from, to)
        back[t] = scores.argmax(axis=0)
        delta = scores[back[t], np.arange(K)] + log_obs[t]
    path = np.empty(T, dtype=np.int64)
    path[T - 1] = int(delta.argmax())
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path, float(delta.max())
