"""Five MLDAs in a chain (the original Serket ``examples/mMLDA/mMLDA2.py``): MLDA1 on data000,
MLDA2 on MLDA1's classes and data001, ..., MLDA5 on MLDA4's classes and data004; 50 documents in
10 categories, every MLDA scored against them.

Run ``python examples/original/mmlda_chain.py`` (the original's settings: K = 10, weights 100,
100 Gibbs sweeps, 5 updates of the five modules in turn; five seeds) or
``python examples/original/mmlda_chain.py --seeds 0 --updates 1 --itr 10`` for a quick try.
"""

import argparse
import os
import time

import numpy as np
import torch

import serket_pyro as srk
from serket_pyro import datasets, mlda


def run(data, args, seed):
    """One run of the chain; returns the five MLDAs' accuracies."""
    srk.reset_module_counter()
    srk.set_seed(seed)
    root = os.path.join(args.output, f"seed{seed}")
    observations = [srk.Observation(x) for x in data.modalities()]
    modules = []
    for i, obs in enumerate(observations):
        m = mlda.MLDA(args.classes, [args.weight] * (1 if i == 0 else 2), itr=args.itr, category=data.category,
                      save_predictions=False, output_root=root, parent_weight=args.parent_weight)
        m.connect(obs) if i == 0 else m.connect(modules[-1], obs)
        modules.append(m)
    for _ in range(args.updates):
        for m in modules:
            m.update()
    return [m.metrics_["accuracy"] for m in modules]


def main(args):
    torch.set_num_threads(args.threads)
    data = datasets.load_mmlda_chain(root=args.data_dir)
    rows = []
    for seed in args.seeds:
        t = time.perf_counter()
        rows.append(run(data, args, seed))
        print(f"seed {seed}: accuracy of MLDA1..MLDA{len(rows[-1])} "
              f"{' / '.join(f'{a:.2f}' for a in rows[-1])} ({time.perf_counter() - t:.0f} s)")
    acc = np.array(rows)
    print(f"mean {' / '.join(f'{a:.3f}' for a in acc.mean(0))}, min {' / '.join(f'{a:.2f}' for a in acc.min(0))} "
          f"over seeds {list(args.seeds)}")
    print(f"files under {args.output}")
    return acc


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder with serket_mmlda_chain.npz (default: $SERKET_PYRO_DATA)")
    p.add_argument("--classes", type=int, default=10, help="topics of every MLDA (original 10)")
    p.add_argument("--weight", type=int, default=100, help="tokens per document and child (original 100)")
    p.add_argument("--itr", type=int, default=100, help="Gibbs sweeps per update (original 100)")
    p.add_argument("--updates", type=int, default=5, help="updates of the five modules (original 5)")
    p.add_argument("--parent-weight", choices=("auto", "document", "token"), default="auto",
                   help="how each MLDA applies its parent's message (MLDA(parent_weight=...))")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--output", default="mmlda_chain_out")
    p.add_argument("--threads", type=int, default=1)
    return p


if __name__ == "__main__":
    main(parser().parse_args())
