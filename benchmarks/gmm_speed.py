"""Speed of the GMM module: one Gibbs sweep and one full ``update()``.

The original Serket GMM (collapsed Gibbs, a Python loop over points) takes about 5 s per sweep and
80-240 s per update for N = 3000, D = 18, K = 10 (the VAE+GMM tutorial's sizes).

Usage::

    python benchmarks/gmm_speed.py                 # N=3000, D=18, K=10, itr=100, 1 thread
    python benchmarks/gmm_speed.py --n 10000 --threads 2

Data: a synthetic 10-class Gaussian mixture in 18-D (well separated, unit within-class spread,
like VAE latents).  Prints a table of median / min times.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import pyro
import torch

import serket_pyro as srk
from serket_pyro.modules.gmm import GMM, _gibbs_sweep, _suff_stats
from timing import time_calls


def synthetic(n: int, d: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points from a ``k``-class mixture in ``d`` dimensions, and their classes."""
    centres = 4.0 * torch.randn(k, d, dtype=torch.float64)
    z = torch.arange(n) % k
    x = centres[z] + torch.randn(n, d, dtype=torch.float64)
    return x, z


def main(args=None) -> list[tuple[str, float, float]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--d", type=int, default=18)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--itr", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sweeps", type=int, default=50, help="sweeps timed one by one")
    p.add_argument("--updates", type=int, default=3, help="update() calls timed")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(args)

    torch.set_num_threads(a.threads)
    pyro.set_rng_seed(a.seed)
    x, truth = synthetic(a.n, a.d, a.k)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        obs = srk.Observation(x)
        gmm = GMM(a.k, itr=a.itr, category=truth.numpy(), output_root=root)
        gmm.connect(obs)

        # one full update from scratch (k-means++ start), then warm-started ones
        first = time_calls(gmm.update, 1)[0]
        acc = gmm.metrics_.get("accuracy", float("nan"))
        warm = time_calls(gmm.update, a.updates)

        # one sweep, from the learned state
        prior = gmm._prior(x)
        xc = x - prior.loc
        xx = (xc.unsqueeze(-1) * xc.unsqueeze(-2)).reshape(a.n, a.d * a.d)
        state = [gmm.weights_, gmm.means_ - prior.loc, torch.linalg.cholesky(gmm.covariances_)]

        def sweep():
            _, _, w, mu, _, tril = _gibbs_sweep(xc, xx, *state, prior, gmm.alpha)
            state[:] = [w, mu, tril]

        for _ in range(5):
            sweep()
        sweeps = time_calls(sweep, a.sweeps)
        stats_only = time_calls(lambda: _suff_stats(xc, xx, gmm.assignments_, a.k), a.sweeps)

    rows.append(("one Gibbs sweep", statistics.median(sweeps), min(sweeps)))
    rows.append(("  of which sufficient statistics", statistics.median(stats_only), min(stats_only)))
    rows.append((f"first update() (k-means++, itr={a.itr}, files)", first, first))
    rows.append((f"warm update() (itr={a.itr}, files)", statistics.median(warm), min(warm)))
    print(f"GMM speed: N={a.n}, D={a.d}, K={a.k}, torch threads={a.threads}, torch {torch.__version__}")
    print(f"{'what':<48}{'median':>12}{'min':>12}")
    for name, med, mn in rows:
        print(f"{name:<48}{med * 1e3:>10.2f}ms{mn * 1e3:>10.2f}ms")
    print(f"accuracy after the first update: {acc:.3f}")
    print("original Serket: ~5 s per sweep, 80-240 s per update")
    return rows


if __name__ == "__main__":
    main()
