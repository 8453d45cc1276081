"""A GMM alone, then a GMM under a Markov model, on 2-D points visited cyclically (the original
Serket ``examples/HMM/hmm.py``): 100 points from 4 Gaussians in the order 0, 1, 2, 3, 0, ...

Run ``python examples/original/hmm.py`` (the original's settings: K = 4, 100 Gibbs sweeps, one
update of the GMM alone, 5 updates of GMM + Markov model; five seeds) or
``python examples/original/hmm.py --seeds 0 --updates 1 --itr 10`` for a quick try.  Prints the
GMM's accuracy in both systems for every seed.
"""

import argparse
import os
import time

import numpy as np
import torch

import serket_pyro as srk
from serket_pyro import datasets, gmm, mm


def run(data, args, seed):
    """One run of both systems; returns the accuracies of the GMM alone and of the GMM under the MM."""
    srk.reset_module_counter()
    srk.set_seed(seed)
    root = os.path.join(args.output, f"seed{seed}")
    obs = srk.Observation(data.data)
    # the GMM alone
    g = gmm.GMM(args.classes, itr=args.itr, category=data.category, output_root=root)
    g.connect(obs)
    g.update()
    alone = g.metrics_["accuracy"]
    # the GMM and a Markov model over its classes
    g = gmm.GMM(args.classes, itr=args.itr, category=data.category, output_root=root)
    m = mm.MarkovModel(output_root=root)
    g.connect(obs)
    m.connect(g)
    for _ in range(args.updates):
        g.update()
        m.update()
    return alone, g.metrics_["accuracy"]


def main(args):
    torch.set_num_threads(args.threads)
    data = datasets.load_hmm_toy(root=args.data_dir)
    acc = {"gmm": [], "gmm_mm": []}
    for seed in args.seeds:
        t = time.perf_counter()
        alone, joint = run(data, args, seed)
        acc["gmm"].append(alone)
        acc["gmm_mm"].append(joint)
        print(f"seed {seed}: GMM accuracy {alone:.2f}, GMM+MM accuracy {joint:.2f} ({time.perf_counter() - t:.0f} s)")
    acc = {k: np.array(v) for k, v in acc.items()}
    for k, v in acc.items():
        print(f"{k:<6} accuracy mean {v.mean():.3f} (min {v.min():.2f}, max {v.max():.2f}) "
              f"over seeds {list(args.seeds)}")
    print(f"files under {args.output}")
    return acc


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder with serket_hmm_toy.npz (default: $SERKET_PYRO_DATA)")
    p.add_argument("--classes", type=int, default=4, help="GMM classes (original 4)")
    p.add_argument("--itr", type=int, default=100, help="Gibbs sweeps per GMM update (original 100)")
    p.add_argument("--updates", type=int, default=5, help="updates of GMM + Markov model (original 5)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--output", default="hmm_out")
    p.add_argument("--threads", type=int, default=1)
    return p


if __name__ == "__main__":
    main(parser().parse_args())
