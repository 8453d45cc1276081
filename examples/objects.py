"""Multimodal object categories (the Serket mMLDA example): one MLDA over what a robot saw, heard
and felt of 50 objects, scored against the object categories.

Run ``python examples/objects.py`` (defaults: K = 10 categories, weights 200 per modality,
5 updates, 5 seeds) or ``python examples/objects.py --seeds 0 --updates 1 --itr 10`` for a quick try.
Prints the accuracy of our rules next to the original's rules (truncated token counts, the
original's messages) run by the same code.
"""

import argparse
import os

import numpy as np
import torch

import serket_pyro as srk
from serket_pyro import datasets, mlda

MODALITIES = ("dsift", "mfcc", "tactile")


def run(data, args, seed, original):
    srk.reset_module_counter()
    srk.set_seed(seed)
    rule = dict(token_rule="original", forward="original", backward="original") if original else {}
    observations = [srk.Observation(getattr(data, m)) for m in MODALITIES]
    mlda1 = mlda.MLDA(args.classes, [args.weight] * len(MODALITIES), itr=args.itr,
                      category=data.object_category, save_predictions=False,
                      output_root=os.path.join(args.output, "original" if original else "ours", f"seed{seed}"),
                      **rule)
    mlda1.connect(*observations)
    for _ in range(args.updates):
        mlda1.update()
    return mlda1.metrics_


def main(args):
    torch.set_num_threads(args.threads)
    data = datasets.load_objects(root=args.data_dir)
    print(f"{len(data.object_category)} objects, modalities {', '.join(MODALITIES)}, "
          f"{len(np.unique(data.object_category))} object categories")
    rows = {}
    for original in (False, True):
        scores = [run(data, args, s, original) for s in args.seeds]
        acc = np.array([s["accuracy"] for s in scores])
        ari = np.array([s["ari"] for s in scores])
        name = "original rules" if original else "serket-pyro"
        rows[name] = acc
        print(f"{name:<15} accuracy {acc.mean():.3f} (min {acc.min():.3f}, max {acc.max():.3f}), "
              f"ARI {ari.mean():.3f} over seeds {list(args.seeds)}")
    print(f"files under {args.output}")
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder with serket_objects.npz (default: $SERKET_PYRO_DATA)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--weight", type=int, default=200, help="tokens per object and modality")
    p.add_argument("--itr", type=int, default=100, help="Gibbs sweeps per update")
    p.add_argument("--updates", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--output", default="objects_out")
    p.add_argument("--threads", type=int, default=1)
    main(p.parse_args())
