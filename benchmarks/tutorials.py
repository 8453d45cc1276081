"""Accuracy and time of the four Serket tutorial systems over several seeds, next to the original's.

    python benchmarks/tutorials.py                          # all four systems, 5 seeds, tutorial settings
    python benchmarks/tutorials.py --systems vae_gmm_mm --seeds 0 1
    python benchmarks/tutorials.py --epochs 20 --n 1000     # a quick look

Prints a markdown table (mean, spread = min..max, seconds per whole 5-iteration run) and writes the
per-run records to ``--json``. The original's figures are those measured with the original
algorithms in SERKET.md section 3 (two seeds, its greedy accuracy metric).
"""

import argparse
import json
import os
import time

import numpy as np
import torch

import serket_pyro as srk
from serket_pyro.runner import SYSTEMS, build_system, load_inputs

ORIGINAL = {  # SERKET.md section 3: two seeds with the original algorithms
    "vae_gmm": "0.716 / 0.590",
    "vae_gmm_mm": "0.763 / 0.750",
    "vae_gmm_mlda": "0.726 / 0.563",
    "vae_gmm_mlda_mm": "0.725 / 0.784",
}


def run_one(name, seed, args, images, speech, category):
    srk.reset_module_counter()
    srk.set_output_root(os.path.join(args.output, f"{name}_seed{seed}"))
    srk.set_seed(seed)
    system = build_system(name, images, speech, category, args)
    if args.mlda_split_merge is not None and "mlda" in system.modules:
        system["mlda"].split_merge = args.mlda_split_merge
    t0 = time.perf_counter()
    system.fit(n_iter=args.iterations, seed=seed, progress=False)
    seconds = time.perf_counter() - t0
    per_iter = [h[system.result_module.name]["accuracy"] for h in system.history]
    m = system.result_module.metrics_
    return {"system": name, "seed": seed, "seconds": seconds, "accuracy": m["accuracy"],
            "greedy_accuracy": m["greedy_accuracy"], "ari": m["ari"], "nmi": m["nmi"],
            "accuracy_per_iteration": per_iter}


def main(args):
    torch.set_num_threads(args.threads)
    images, speech, category, source = load_inputs(args.data_dir, args.n, offline_fallback=False)
    records = []
    for name in args.systems:
        for seed in args.seeds:
            r = run_one(name, seed, args, images, speech, category)
            records.append(r)
            print(f"{name} seed {seed}: accuracy {r['accuracy']:.3f} (per iteration "
                  f"{', '.join(f'{a:.3f}' for a in r['accuracy_per_iteration'])}), {r['seconds']:.0f} s", flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(records, f, indent=1)
    print(f"\n{len(images)} points from {source}; {args.iterations} outer iterations, VAE {args.epochs} epochs"
          f"{' (deskewed images)' if args.deskew else ' (raw pixels)'}, "
          f"{args.threads} thread(s)\n")
    print("| system | accuracy mean | min..max | greedy (original metric) | ARI | NMI | seconds per run | original |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.systems:
        rs = [r for r in records if r["system"] == name]
        a = np.array([r["accuracy"] for r in rs])
        print(f"| {name} | {a.mean():.3f} | {a.min():.3f}..{a.max():.3f} | "
              f"{np.mean([r['greedy_accuracy'] for r in rs]):.3f} | {np.mean([r['ari'] for r in rs]):.3f} | "
              f"{np.mean([r['nmi'] for r in rs]):.3f} | {np.mean([r['seconds'] for r in rs]):.0f} | "
              f"{ORIGINAL[name]} |")
    return records


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--latent-dim", type=int, default=18)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default="/tmp/serket_pyro_benchmark")
    p.add_argument("--json", default=None, help="write per-run records here")
    p.add_argument("--mlda-split-merge", type=int, default=None,
                   help="MLDA split-merge moves per update (MLDA(split_merge=...); default: the module's, 3)")
    p.add_argument("--deskew", action=argparse.BooleanOptionalAction, default=True,
                   help="VAE(deskew=True), default: the VAE deskews the images first; --no-deskew: raw pixels")
    main(p.parse_args())
