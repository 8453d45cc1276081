"""Memory and time of a shard-holding joint fit (:mod:`serket_pyro.joint.data_parallel`): the peak
resident memory of each process on 1 and on ``W`` processes.

    python benchmarks/joint_shard_memory.py --n-points 1000000
    torchrun --nproc_per_node 2 benchmarks/joint_shard_memory.py --n-points 1000000

A compiled GMM (3 classes) under a Markov chain over ``--n-points`` rows of ``--dim`` dimensions
(float64), from a fixed start, ``--epochs`` epochs of ``--batch-size``-row minibatches.  Every process generates only
its rows (blocks of 1,000 rows, each from its own seed, so 1 and ``W`` processes fit the same
data).  Printed by rank 0: rows held, peak RSS after the imports and process group (baseline),
peak RSS after the fit, their difference, seconds of the fit, the epoch losses.
"""

import argparse
import json
import resource
import time

import numpy as np
import torch

import serket_pyro as srk
from serket_pyro import distributed
from serket_pyro.joint import joint_program
from serket_pyro.joint.data_parallel import fit_data_parallel


def _rows(a: int, b: int, dim: int) -> np.ndarray:
    """Rows ``a..b-1`` of the data: a cyclic 3-class chain (blocks of 20 steps), each block of
    1,000 rows drawn from its own seed."""
    out = []
    centres = np.eye(3, dim) * 4.0
    for blk in range(a // 1000, (b - 1) // 1000 + 1):
        lo = blk * 1000
        rng = np.random.default_rng(blk)
        idx = np.arange(lo, lo + 1000)
        x = centres[(idx // 20) % 3] + rng.normal(size=(1000, dim))
        out.append(x[max(a - lo, 0):b - lo])
    return np.concatenate(out)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-points", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=20_000)
    ap.add_argument("--chunk-len", type=int, default=50)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rank, world = distributed.init_process_group()
    base = _peak_mb()
    a, b = distributed.shard_bounds(args.n_points, world, rank)
    srk.set_seed(0)
    t0 = time.perf_counter()
    with distributed.sharded(args.n_points, seed=0):
        g = srk.GMM(3)
        g.connect(srk.Observation(_rows(a, b, args.dim)))
        # a fixed start (the k-means start's memory is that of its own sample, not the data's)
        g.means_ = torch.randn(3, args.dim, dtype=torch.float64)
        g.covariances_ = torch.eye(args.dim, dtype=torch.float64).expand(3, args.dim, args.dim).clone()
        g.weights_ = torch.full((3,), 1 / 3, dtype=torch.float64)
        m = srk.MarkovModel()
        m.connect(g)
        p = joint_program(m, chunk_len=args.chunk_len)
        losses = fit_data_parallel(p, args.epochs, batch_size=args.batch_size, lr=0.05)
    seconds = time.perf_counter() - t0
    peak = _peak_mb()
    out = {"processes": world, "rows_held": p.N, "baseline_mb": round(base, 1), "peak_mb": round(peak, 1),
           "fit_mb": round(peak - base, 1), "seconds": round(seconds, 1), "losses": losses}
    res = [None] * world
    if world > 1:
        torch.distributed.all_gather_object(res, out)
    else:
        res = [out]
    if rank == 0:
        for r in res:
            print(json.dumps(r))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f)
    distributed.destroy_process_group()
    return out


if __name__ == "__main__":
    main()
