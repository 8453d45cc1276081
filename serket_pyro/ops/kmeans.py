"""Euclidean k-means: greedy k-means++ seeding, Lloyd iterations, best of several restarts.

The one k-means of the package: the GMM module starts its first chain from it
(:func:`serket_pyro.modules.gmm._kmeanspp`), the joint model initialises its classes with it and
the HAC speech features build their codebooks with it (:func:`serket_pyro.features.kmeans`).

Seeding is the greedy variant of k-means++ used by scikit-learn (Arthur and Vassilvitskii 2007,
section 6; ``sklearn.cluster.kmeans_plusplus``): each new centre is the best of
``2 + floor(ln k)`` candidates drawn with probability proportional to the squared distance to the
nearest centre so far, "best" meaning the one that lowers the potential (the inertia of the
seeds) most.  Lloyd iterations follow until the assignments stop changing or the centres move by
at most ``tol`` times the mean per-feature variance (squared); an empty cluster is moved to the
point farthest from its centre.  ``n_init`` restarts keep the run of least inertia.

All draws come from one explicit ``torch.Generator`` (CPU), so a seed gives the same result
whatever the global RNG holds.  The points are rescaled by a power of two (exact) and centred
before any distance is taken, so squared distances neither overflow nor underflow.

References
----------
D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful seeding", SODA 2007.
S. Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory 28(2), 1982.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..validation import check_memory, check_positive_float, check_positive_int, check_real

__all__ = ["KMeansResult", "kmeans", "kmeans_plusplus"]


class KMeansResult(NamedTuple):
    """What :func:`kmeans` returns.

    Attributes
    ----------
    labels : torch.Tensor, shape (n,), int64
        Index of the nearest centre of each point.
    centers : torch.Tensor, shape (k, D)
        The centres, same dtype and device as the points.
    inertia : float
        Sum over points of the squared distance to their centre.
    n_iter : int
        Lloyd iterations of the kept run.
    """

    labels: torch.Tensor
    centers: torch.Tensor
    inertia: float
    n_iter: int


def _sq_dist(x: torch.Tensor, x_sq: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(n, m)`` between rows of ``x`` and of ``c`` (``x_sq = |x|^2``)."""
    return (x_sq[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]).clamp_min_(0.0)


def _ldexp(t: torch.Tensor, e: int) -> torch.Tensor:
    """``t * 2**e``, exact, in two steps so that the factor itself never overflows."""
    return t * 2.0 ** (e // 2) * 2.0 ** (e - e // 2)


def _generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None and seed is not None:
        raise ValueError("kmeans: give a generator or a seed, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise ValueError(f"kmeans: generator must be a CPU torch.Generator, got {generator!r}")
        return generator
    if seed is None:  # from the global RNG, so that torch.manual_seed / srk.set_seed fix the result
        seed = int(torch.randint(2**62, (), dtype=torch.int64))
    return torch.Generator(device="cpu").manual_seed(check_positive_int(seed, "seed", "kmeans", minimum=0, maximum=2**63 - 1))


def kmeans_plusplus(x: torch.Tensor, k: int, *, generator: torch.Generator,
                    n_local_trials: int | None = None, x_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy k-means++ seeds of ``x``: ``(k,)`` int64 row indices (on ``x``'s device).

    Parameters
    ----------
    x : torch.Tensor, shape (n, D)
        Points, floating point, finite (not checked here; :func:`kmeans` checks them).
    k : int
        Number of seeds, ``1 <= k <= n``.
    generator : torch.Generator
        CPU generator all draws come from.
    n_local_trials : int, optional
        Candidates per seed; default ``2 + floor(ln k)`` (scikit-learn's); 1 is plain k-means++.
    x_sq : torch.Tensor, shape (n,), optional
        ``(x * x).sum(1)`` if already computed.

    Returns
    -------
    torch.Tensor, shape (k,), int64
    """
    n = x.shape[0]
    if x_sq is None:
        x_sq = (x * x).sum(1)
    L = 2 + int(math.log(k)) if n_local_trials is None else n_local_trials
    idx = torch.empty(k, dtype=torch.int64, device=x.device)
    idx[0] = int(torch.randint(n, (), generator=generator))
    closest = _sq_dist(x, x_sq, x[idx[:1]])[:, 0]  # (n,) squared distance to the nearest seed
    for j in range(1, k):  # loop over the seeds; each step is vectorised over points and candidates
        pot = closest.sum()
        u = (1.0 - torch.rand(L, generator=generator, dtype=torch.float64)).to(x.device)
        if float(pot) > 0.0:
            cum = torch.cumsum(closest.to(torch.float64), 0)
            cand = torch.searchsorted(cum, u * cum[-1]).clamp_max_(n - 1)
        else:  # every point sits on a seed: any point will do
            cand = (u * n).long().clamp_max_(n - 1)
        d_cand = torch.minimum(closest[None, :], _sq_dist(x[cand], x_sq[cand], x))  # (L, n)
        best = int(torch.argmin(d_cand.sum(1)))
        idx[j] = cand[best]
        closest = d_cand[best]
    return idx


def _lloyd(x, x_sq, centers, max_iter: int, tol_abs: float):
    """Lloyd iterations from ``centers``; returns ``(labels, centers, inertia tensor, n_iter)``."""
    k = centers.shape[0]
    labels = None
    it = 0
    for it in range(1, max_iter + 1):  # loop over Lloyd iterations
        d = _sq_dist(x, x_sq, centers)
        d_min, new_labels = d.min(1)
        if labels is not None and torch.equal(new_labels, labels):
            it -= 1  # nothing changed: converged at the previous iteration
            break
        labels = new_labels
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        new = sums / counts.clamp_min(1).to(x.dtype)[:, None]
        empty = counts == 0
        if bool(empty.any()):  # move each empty cluster onto one of the points farthest from their centre
            new[empty] = x[torch.topk(d_min, int(empty.sum())).indices]
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if shift <= tol_abs:
            break
    d_min, labels = _sq_dist(x, x_sq, centers).min(1)
    return labels, centers, d_min.sum(), it


def kmeans(x, k: int, *, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4,
           generator: torch.Generator | None = None, seed: int | None = None,
           n_local_trials: int | None = None) -> KMeansResult:
    """Euclidean k-means of the rows of ``x``, best of ``n_init`` greedy k-means++ starts.

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n, D)
        Points; real and finite.  Integer input is taken as float64; a tensor keeps its dtype and
        device.
    k : int
        Number of clusters, ``1 <= k <= n``.
    n_init : int, default 10
        Restarts (seeding + Lloyd); the run of least inertia is kept.  One start lands well
        above the best inertia on real data (MFCC frames, VAE latents), restarts are cheap.
    max_iter : int, default 300
        Most Lloyd iterations per start (0: the seeds themselves).
    tol : float, default 1e-4
        Stop when the summed squared centre shift is at most ``tol`` times the mean per-feature
        variance of ``x`` (scikit-learn's rule); also stops when no assignment changes.
    generator : torch.Generator, optional
        CPU generator all draws come from.
    seed : int, optional
        Seed of a fresh generator, instead of ``generator``.  With neither, the seed is drawn from
        torch's global RNG (so ``torch.manual_seed`` fixes the result).
    n_local_trials : int, optional
        Candidates per seed, default ``2 + floor(ln k)``; 1 gives plain k-means++.

    Returns
    -------
    KMeansResult
        ``labels`` (n,) int64, ``centers`` (k, D), ``inertia`` (float), ``n_iter``.

    Raises
    ------
    ValueError
        Complex, non-2-D or non-finite points, ``k`` outside ``1 .. n``, bad counts, both
        ``generator`` and ``seed``, or distances that would not fit in memory; the message
        starts with ``kmeans:``.
    """
    check_real(x, "x", "kmeans")
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.float64)
    if x.dim() != 2:
        raise ValueError(f"kmeans: x must be (n, D), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("kmeans: x contains NaN or infinite values")
    k = check_positive_int(k, "k (number of clusters)", "kmeans")
    n_init = check_positive_int(n_init, "n_init", "kmeans")
    max_iter = check_positive_int(max_iter, "max_iter", "kmeans", minimum=0)
    tol = check_positive_float(tol, "tol", "kmeans", allow_zero=True)
    if n_local_trials is not None:
        n_local_trials = check_positive_int(n_local_trials, "n_local_trials", "kmeans")
    n = x.shape[0]
    if n < k:
        raise ValueError(f"kmeans: {n} points cannot make {k} clusters")
    check_memory(2 * n * k, f"n x k = {n} x {k} distances", "kmeans", itemsize=x.element_size())
    g = _generator(generator, seed)

    # exact power-of-two rescaling, then centring: distances neither overflow nor underflow
    amax = float(x.abs().max())
    e = math.frexp(amax)[1] if 0.0 < amax else 0
    xs = _ldexp(x, -e)
    mean = xs.mean(0)
    xs = xs - mean
    x_sq = (xs * xs).sum(1)
    tol_abs = tol * float(xs.var(0, unbiased=False).mean()) if n > 1 else 0.0

    best = None
    for _ in range(n_init):  # loop over restarts
        seeds = kmeans_plusplus(xs, k, generator=g, n_local_trials=n_local_trials, x_sq=x_sq)
        run = _lloyd(xs, x_sq, xs[seeds].clone(), max_iter, tol_abs)
        if best is None or float(run[2]) < float(best[2]):
            best = run
    labels, centers, inertia, n_iter = best
    centers = _ldexp(centers + mean, e)
    try:
        inertia = math.ldexp(float(inertia), 2 * e)
    except OverflowError:
        inertia = math.inf
    return KMeansResult(labels, centers, inertia, n_iter)
