"""Exact inference in a first-order Markov chain with per-step evidence: forward-backward and Viterbi.

L. E. Baum, T. Petrie, G. Soules, N. Weiss, "A maximization technique occurring in the statistical
analysis of probabilistic functions of Markov chains", Ann. Math. Statist. 41 (1970);
L. R. Rabiner, "A tutorial on hidden Markov models and selected applications in speech
recognition", Proc. IEEE 77 (1989), section III (the scaled recursions used here).

The chain has ``K`` states; ``z_0 ~ init``, ``z_t | z_{t-1} ~ trans[z_{t-1}]`` and step ``t`` carries
evidence ``e_t(k) = p(y_t | z_t = k)`` (any non-negative likelihood, e.g. the class probabilities a
child module sends up).  Everything enters and leaves in log space; inside, the recursions run on
probabilities rescaled to sum to one at every step (Rabiner's scaling), which is exact, cannot
underflow over the length of the chain, and is several times faster than a ``logsumexp`` at every
step.  Per-step evidence is shifted by its row maximum before exponentiation, so evidence with a
dynamic range up to ~700 nats per step is handled exactly.

Backend: numpy float64.  The per-step work is a ``(K,) @ (K, K)`` product, far too small for torch's
per-call overhead: for ``T = 3000, K = 10`` the numpy pass takes ~15 ms (~35 ms rescaling at every
step) and the same per-step recursion in torch 80-100 ms (``benchmarks/mm_speed.py``).  :func:`forward_backward` therefore takes numpy
arrays or torch tensors and always returns **numpy float64 arrays**; :func:`forward_backward_torch`
is the identical recursion in torch (returns torch tensors), kept for that comparison and for
callers that need autograd.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

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


def _exp_rows(log_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``exp(log_a - m)`` with ``m`` the row maxima (``log_a`` 2-D), and ``m``."""
    m = log_a.max(axis=-1, keepdims=True)
    return np.exp(log_a - m), m[..., 0]


def forward_backward(log_init, log_trans, log_obs, *, rescale_every: int = 16) -> ForwardBackwardResult:
    """Scaled forward-backward (Baum et al. 1970; Rabiner 1989) for one chain, numpy float64.

    Args:
        log_init: ``(K,)`` log initial distribution.  Unnormalised values are used as given (they
            then act as extra evidence on ``z_0`` and enter the likelihood).
        log_trans: ``(K, K)`` log transition matrix, ``log_trans[i, j] = log p(z_t = j | z_{t-1} = i)``
            (rows = from; rows are expected to sum to one).
        log_obs: ``(T, K)`` per-step log evidence ``log p(y_t | z_t = k)``; ``-inf`` allowed, but
            every row needs a finite entry.
        rescale_every: the forward and backward vectors are renormalised every this many steps
            (Rabiner's scaling; 1 = every step).  Skipping the per-step normalisation halves the
            cost of the Python-level recursion; a block whose total mass leaves
            ``[1e-100, 1e100]`` is redone with per-step scaling, so the result is the same to
            rounding error for any evidence.

    Returns:
        :class:`ForwardBackwardResult` with numpy float64 arrays.

    Raises:
        ValueError: bad shapes, NaN, a row of impossible evidence, or evidence that has probability
            zero under the chain (``log_likelihood`` would be ``-inf``).
    """
    log_init, log_trans, log_obs = _np64(log_init), _np64(log_trans), _np64(log_obs)
    T, K = _check(log_init, log_trans, log_obs)
    B = max(int(rescale_every), 1)
    A = np.exp(log_trans)
    obs, obs_shift = _exp_rows(log_obs)                      # (T, K) with row maxima 1, (T,)
    init = np.exp(log_init)
    M = list(A[None, :, :] * obs[:, None, :])               # M[t][i, j] = A[i, j] e_t(j)
    dot = np.dot

    # forward: alpha[t] is proportional to p(z_t, e_{0:t+1}) (an arbitrary positive scale per row)
    alpha = [None] * T
    a = init * obs[0]
    s = a.sum()
    if not s > 0:
        raise ValueError("evidence at step 0 has probability zero under the initial distribution")
    a = a / s
    alpha[0] = a
    log_z = np.log(s)
    for t0 in range(1, T, B):
        t1 = min(t0 + B, T)
        for t in range(t0, t1):
            a = dot(a, M[t])
            alpha[t] = a
        s = a.sum()
        if not 1e-100 < s < 1e100:                           # redo this block, scaling every step
            a = alpha[t0 - 1]
            s = 1.0
            for t in range(t0, t1):
                a = dot(a, M[t])
                st = a.sum()
                if not st > 0:
                    raise ValueError(f"evidence at step {t} has probability zero under the chain")
                a = a / st
                alpha[t] = a
                log_z += np.log(st)
        else:
            a = a / s
            alpha[t1 - 1] = a
            log_z += np.log(s)
    alpha = np.array(alpha)

    # backward: beta[t] is proportional to p(e_{t+1:T} | z_t) (arbitrary positive scale per row)
    beta = [None] * T
    b = np.ones(K)
    beta[T - 1] = b
    for t1 in range(T - 1, 0, -B):
        t0 = max(t1 - B, 0)
        for t in range(t1, t0, -1):
            b = dot(M[t], b)
            beta[t - 1] = b
        s = b.sum()
        if not 1e-100 < s < 1e100:
            b = beta[t1]
            for t in range(t1, t0, -1):
                b = dot(M[t], b)
                b = b / b.sum()
                beta[t - 1] = b
        else:
            b = b / s
            beta[t0] = b
    beta = np.array(beta)

    log_lik = float(log_z + obs_shift.sum())
    pred = np.empty((T, K))                                  # p(z_t | e_{0:t}), up to scale
    pred[0] = init
    dot(alpha[:-1], A, out=pred[1:])
    w = obs[1:] * beta[1:]                                   # e_t(j) beta_t(j), t >= 1
    z = (pred[1:] * w).sum(axis=1)                           # normaliser of the pairwise marginal
    with np.errstate(divide="ignore"):
        gamma = alpha * beta
        log_marg = np.log(gamma / gamma.sum(axis=1, keepdims=True))
        # xi_t(i, j) = alpha_{t-1}(i) A(i, j) e_t(j) beta_t(j) / z_t, summed over t = 1..T-1
        counts = A * dot((alpha[:-1] / z[:, None]).T, w)
        loo = pred * beta
        log_loo = np.log(loo / loo.sum(axis=1, keepdims=True))
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
