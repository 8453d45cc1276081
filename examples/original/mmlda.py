"""Multimodal categories of objects and motions (the original Serket ``examples/mMLDA/mMLDA.py``):
an MLDA over what a robot saw, heard and felt of 50 objects (object categories), an MLDA over its
joint angles (motion categories) and an MLDA over both MLDAs' classes.

Run ``python examples/original/mmlda.py`` (the original's settings: K = 10 everywhere, weights
200 per observation and 100 per lower MLDA, 100 Gibbs sweeps, 5 updates of the three modules in
turn; five seeds) or ``python examples/original/mmlda.py --seeds 0 --updates 1 --itr 10`` for a
quick try.  Prints the object and motion accuracies of every seed; ``--parent-weight token``
applies the top MLDA's message once per token (the rule before ``parent_weight``).
"""

import argparse
import os
import time

import numpy as np
import torch

import serket_pyro as srk
from serket_pyro import datasets, mlda

OBJECT_MODALITIES = ("dsift", "mfcc", "tactile")


def run(data, args, seed):
    """One run of the graph; returns the object and motion MLDAs' accuracies."""
    srk.reset_module_counter()
    srk.set_seed(seed)
    root = os.path.join(args.output, f"seed{seed}")
    common = dict(itr=args.itr, save_predictions=False, output_root=root, parent_weight=args.parent_weight)
    observations = [srk.Observation(getattr(data, m)) for m in OBJECT_MODALITIES]
    angle = srk.Observation(data.angle)
    mlda1 = mlda.MLDA(args.classes, [args.weight] * 3, category=data.object_category, **common)
    mlda2 = mlda.MLDA(args.classes, [args.weight], category=data.motion_category, **common)
    mlda3 = mlda.MLDA(args.classes, [args.top_weight] * 2, backward=args.backward, **common)
    mlda1.connect(*observations)
    mlda2.connect(angle)
    mlda3.connect(mlda1, mlda2)
    for _ in range(args.updates):
        mlda1.update()
        mlda2.update()
        mlda3.update()
    return mlda1.metrics_["accuracy"], mlda2.metrics_["accuracy"]


def main(args):
    torch.set_num_threads(args.threads)
    data = datasets.load_objects(root=args.data_dir)
    acc = {"object": [], "motion": []}
    for seed in args.seeds:
        t = time.perf_counter()
        obj, mot = run(data, args, seed)
        acc["object"].append(obj)
        acc["motion"].append(mot)
        print(f"seed {seed}: object accuracy {obj:.2f}, motion accuracy {mot:.2f} ({time.perf_counter() - t:.0f} s)")
    acc = {k: np.array(v) for k, v in acc.items()}
    for k, v in acc.items():
        print(f"{k:<6} accuracy mean {v.mean():.3f} (min {v.min():.2f}, max {v.max():.2f}) "
              f"over seeds {list(args.seeds)}")
    print(f"files under {args.output}")
    return acc


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder with serket_objects.npz (default: $SERKET_PYRO_DATA)")
    p.add_argument("--classes", type=int, default=10, help="topics of every MLDA (original 10)")
    p.add_argument("--weight", type=int, default=200, help="tokens per object and observation (original 200)")
    p.add_argument("--top-weight", type=int, default=100, help="tokens per object for each lower MLDA's classes "
                   "in the top MLDA (original 100)")
    p.add_argument("--itr", type=int, default=100, help="Gibbs sweeps per update (original 100)")
    p.add_argument("--updates", type=int, default=5, help="updates of the three modules (original 5)")
    p.add_argument("--backward", choices=("exclusive", "original"), default="exclusive",
                   help="the top MLDA's backward message (MLDA(backward=...))")
    p.add_argument("--parent-weight", choices=("auto", "document", "token"), default="auto",
                   help="how the lower MLDAs apply the top MLDA's message (MLDA(parent_weight=...))")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--output", default="mmlda_out")
    p.add_argument("--threads", type=int, default=1)
    return p


if __name__ == "__main__":
    main(parser().parse_args())
