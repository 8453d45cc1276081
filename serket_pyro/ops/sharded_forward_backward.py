"""Exact forward-backward over a Markov chain split into contiguous shards (one per process).

Shard ``r`` holds steps ``t_r .. t_{r+1} - 1``.  With ``M_t = A diag(e_t)`` (``A`` the transition
matrix, ``e_t`` step ``t``'s evidence), the forward vector entering shard ``r`` is
``alpha_{t_r - 1} = (init e_0) M_1 ... M_{t_r - 1}`` and the backward vector leaving it is
``beta_{t_{r+1} - 1} = M_{t_{r+1}} ... M_{T-1} 1``.  Each shard summarises itself by the product of
its own ``M_t`` (a ``K x K`` matrix, rescaled, and its log scale; the first shard folds the initial
distribution into it), the ``R`` summaries are all-gathered (``R (K^2 + 1)`` numbers), and every
shard then knows its two boundary messages and the chain's likelihood, and runs
:func:`~serket_pyro.ops.forward_backward.forward_backward` on its own steps alone: the marginals,
leave-one-out messages and transition counts equal the unsharded pass's up to rounding (the
product of transfer matrices is the associative form of the forward recursion).  The transition
across a shard boundary is counted by the later shard from
``p(z_{t-1} = i, z_t = j | e) = alpha_{t-1}(i) A_ij / (alpha_{t-1} A)_j * p(z_t = j | e)``.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import distributed as _dist
from .forward_backward import ForwardBackwardResult, _np64, forward_backward

__all__ = ["transfer_summary", "shard_forward_backward", "sharded_forward_backward"]


def transfer_summary(log_init, log_trans, log_obs, first: bool) -> tuple[np.ndarray, float]:
    """The shard's transfer matrix ``prod_t A diag(e_t)``, rescaled to largest entry 1, and the log
    of the scale taken out: ``(P (K, K), log_scale)``.

    ``first``: the shard holds step 0; then every row of ``P`` is ``(init e_0) M_1 ... M_{T-1}``,
    so that any probability vector times ``P`` gives that vector.

    The product is taken as a balanced tree of batched ``K x K`` products (``log2 T`` numpy calls
    per block of steps instead of ``T`` Python-level ones), each product rescaled to largest
    entry 1 (entries are non-negative: no cancellation, so every entry keeps its relative
    precision whatever its size).
    """
    log_init, log_trans, log_obs = _np64(log_init), _np64(log_trans), _np64(log_obs)
    K = log_trans.shape[0]
    A = np.exp(log_trans)
    shift = log_obs.max(axis=1)
    obs = np.exp(log_obs - shift[:, None])
    log_scale = float(shift.sum())
    P = np.tile(np.exp(log_init) * obs[0], (K, 1)) if first else np.eye(K)
    start = 1 if first else 0
    block = max(1, (1 << 20) // (K * K))          # steps per block: O(2^20) numbers in memory
    for b0 in range(start, obs.shape[0], block):
        mats = A[None, :, :] * obs[b0:b0 + block, None, :]        # (L, K, K): M_t = A diag(e_t)
        logs = np.zeros(mats.shape[0])
        while mats.shape[0] > 1:
            odd = mats[-1:] if mats.shape[0] % 2 else mats[:0]
            odd_log = logs[-1:] if mats.shape[0] % 2 else logs[:0]
            prod = np.matmul(mats[0:-1:2] if odd.shape[0] else mats[0::2], mats[1::2])
            m = prod.max(axis=(1, 2))
            if not (m > 0).all():
                raise ValueError(f"evidence in steps {b0}..{b0 + block - 1} of this shard has probability "
                                 "zero under the chain")
            prod /= m[:, None, None]
            pair_logs = logs[0:-1:2] if odd.shape[0] else logs[0::2]
            logs = np.concatenate([pair_logs + logs[1::2] + np.log(m), odd_log])
            mats = np.concatenate([prod, odd])
        P = P @ mats[0]
        m = P.max()
        if not m > 0:
            raise ValueError(f"evidence in steps {b0}..{b0 + block - 1} of this shard has probability zero "
                             "under the chain")
        P /= m
        log_scale += float(logs[0]) + np.log(m)
    return P, log_scale


def shard_forward_backward(log_init, log_trans, log_obs, summaries, r: int) -> ForwardBackwardResult:
    """Forward-backward on shard ``r`` given every shard's :func:`transfer_summary`.

    Returns the shard's ``log_marginals`` and ``log_loo`` (its own steps), the **whole chain's**
    ``log_likelihood`` and the shard's part of the expected transition counts (its inner
    transitions and the one entering it); their sum over the shards is the chain's.
    """
    log_init, log_trans, log_obs = _np64(log_init), _np64(log_trans), _np64(log_obs)
    K = log_trans.shape[0]
    A = np.exp(log_trans)
    # the whole chain's likelihood and the boundary messages, from the summaries alone
    e = np.full(K, 1.0 / K)
    log_s = 0.0
    a_in = None
    for q, (P, ls) in enumerate(summaries):
        if q == r:
            a_in = e.copy()
        e = e @ P
        s = e.sum()
        e, log_s = e / s, log_s + np.log(s) + ls
    log_lik = float(log_s)
    b = np.ones(K)
    for P, _ in summaries[r + 1:][::-1]:
        b = P @ b
        b = b / b.sum()
    with np.errstate(divide="ignore"):
        log_b = np.log(b)
        obs = log_obs.copy()
        obs[-1] = obs[-1] + log_b
        if r == 0:
            local_init = log_init
        else:
            pred = a_in @ A
            local_init = np.log(pred)
        res = forward_backward(local_init, log_trans, obs)
        loo = res.log_loo.copy()
        last = loo[-1] + log_b  # the steps after the shard belong to the rest of the chain
        loo[-1] = last - np.logaddexp.reduce(last)
    counts = res.trans_counts.copy()
    if r > 0:
        gamma0 = np.exp(res.log_marginals[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            back = np.where(pred > 0, gamma0 / pred, 0.0)
        counts += a_in[:, None] * A * back[None, :]
    return ForwardBackwardResult(log_lik, res.log_marginals, counts, loo)


def sharded_forward_backward(log_init, log_trans, log_obs) -> ForwardBackwardResult:
    """:func:`~serket_pyro.ops.forward_backward.forward_backward` of a chain whose steps are split
    over the processes of a sharded fit (:mod:`serket_pyro.distributed`): ``log_obs`` is this
    rank's block of steps (rank order = time order).  Communication: one all-gather of ``K^2 + 1``
    numbers per rank and one all-reduce of the ``K x K`` counts.  In one process it is
    :func:`forward_backward`.

    Returns:
        ``log_marginals`` and ``log_loo`` of this rank's steps; the whole chain's
        ``log_likelihood`` and ``trans_counts``.
    """
    if not _dist.is_sharded():
        return forward_backward(log_init, log_trans, log_obs)
    r = _dist.rank()
    P, ls = transfer_summary(log_init, log_trans, log_obs, first=r == 0)
    flat = torch.from_numpy(np.concatenate([P.reshape(-1), [ls]]))
    allp = _dist.all_gather_same(flat).numpy()
    K = P.shape[0]
    summaries = [(row[:-1].reshape(K, K), float(row[-1])) for row in allp]
    res = shard_forward_backward(log_init, log_trans, log_obs, summaries, r)
    counts = _dist.all_reduce_sum(torch.from_numpy(res.trans_counts)).numpy()
    return ForwardBackwardResult(res.log_likelihood, res.log_marginals, counts, res.log_loo)
