"""Accuracy and time of the four Serket tutorial systems over several seeds, next to the original's.

    python benchmarks/tutorials.py                          # all four systems, 5 seeds, tutorial settings
    python benchmarks/tutorials.py --systems vae_gmm_mm --seeds 0 1
    python benchmarks/tutorials.py --epochs 20 --n 1000     # a quick look
    python benchmarks/tutorials.py --orders random markov   # the same pairs without the cyclic order
    python benchmarks/tutorials.py --systems vae_gmm_mm --orders markov --mm-evidence-model confusion

``--orders``: ``cyclic`` (the tutorial's rows as they are, digit ``n % 10``), ``random`` (the same
rows shuffled, a new permutation per seed) and ``markov`` (a partly ordered sequence: the next
digit is the cyclic successor with probability ``--p-next``, else a uniformly random digit; rows
used at most once, so about 2,800 of the 3,000; :func:`serket_pyro.datasets.paired_data.markov_order`).
For systems with a Markov model the record holds the learned transition matrix's largest absolute
error after the best label mapping, against the generating matrix and against the transition
frequencies of the true labels of that sequence (what a learner that saw the labels would get).

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
from serket_pyro.metrics import best_mapping
from serket_pyro.datasets.paired_data import markov_order, markov_order_transitions
from serket_pyro.app.runner import SYSTEMS, build_system, load_inputs

ORIGINAL = {  # SERKET.md section 3: two seeds with the original algorithms
    "vae_gmm": "0.716 / 0.590",
    "vae_gmm_mm": "0.763 / 0.750",
    "vae_gmm_mlda": "0.726 / 0.563",
    "vae_gmm_mlda_mm": "0.725 / 0.784",
}


def reorder(order, seed, category, p_next):
    """Row indices of the data in ``order`` (a fixed data seed per run seed)."""
    rng = np.random.default_rng(10_000 + seed)
    if order == "cyclic":
        return np.arange(len(category))
    if order == "random":
        return rng.permutation(len(category))
    return markov_order(category, p_next, rng=rng)


def transition_errors(system, category, p_next, order):
    """Largest absolute error of the Markov model's learned matrix after the best label mapping,
    against the generating matrix and the true labels' transition frequencies."""
    mm = system.modules.get("mm")
    if mm is None or mm.trans_prob_ is None:
        return {}
    K = mm.trans_prob_.shape[0]
    pred = mm.forward_msg.probs.argmax(1).cpu().numpy()
    mapping = best_mapping(category, pred)
    perm = np.full(K, -1)
    for k, c in mapping.items():
        if c >= 0:
            perm[k] = c
    if (perm < 0).any() or len(set(perm)) != K:
        return {}
    A = np.empty((K, K))
    A[np.ix_(perm, perm)] = mm.trans_prob_.cpu().numpy()
    counts = np.zeros((K, K))
    np.add.at(counts, (category[:-1], category[1:]), 1.0)
    empirical = counts / counts.sum(1, keepdims=True).clip(min=1)
    p = {"cyclic": 1.0, "random": 0.0, "markov": p_next}[order]
    truth = markov_order_transitions(p, K) if order != "random" else np.tile(np.bincount(category, minlength=K)
                                                                            / len(category), (K, 1))
    return {"trans_err_generating": float(np.abs(A - truth).max()),
            "trans_err_empirical": float(np.abs(A - empirical).max()),
            "trans_err_oracle": float(np.abs(empirical - truth).max())}


def run_one(name, seed, args, images, speech, category, order="cyclic"):
    rows = reorder(order, seed, category, args.p_next)
    images, category = images[rows], category[rows]
    speech = None if speech is None else speech[rows]
    srk.reset_module_counter()
    srk.set_output_root(os.path.join(args.output, f"{name}_{order}_seed{seed}"))
    srk.set_seed(seed)
    system = build_system(name, images, speech, category, args)
    if args.mlda_split_merge is not None and "mlda" in system.modules:
        system["mlda"].split_merge = args.mlda_split_merge
    if args.mlda_parent_weight is not None and "mlda" in system.modules:
        system["mlda"].parent_weight = args.mlda_parent_weight
    if args.mm_evidence_model is not None and "mm" in system.modules:
        system["mm"].evidence_model = args.mm_evidence_model
    for key in ("kmeans_restarts", "screen_sweeps"):
        value = getattr(args, f"gmm_{key}")
        if value is not None:
            for mod in system.modules.values():
                if isinstance(mod, srk.GMM):
                    setattr(mod, key, value)
    t0 = time.perf_counter()
    system.fit(n_iter=args.iterations, seed=seed, progress=False)
    seconds = time.perf_counter() - t0
    per_iter = [h[system.result_module.name]["accuracy"] for h in system.history]
    m = system.result_module.metrics_
    return {"system": name, "order": order, "n": int(len(category)), "seed": seed, "seconds": seconds,
            "accuracy": m["accuracy"], "greedy_accuracy": m["greedy_accuracy"], "ari": m["ari"], "nmi": m["nmi"],
            "accuracy_per_iteration": per_iter,
            "largest_drop": float(max([0.0] + [a - b for a, b in zip(per_iter, per_iter[1:])])),
            "flags": [f for h in system.history for f in h.get("flags", [])],
            **transition_errors(system, category, args.p_next, order)}


def main(args):
    torch.set_num_threads(args.threads)
    images, speech, category, source = load_inputs(args.data_dir, args.n, offline_fallback=False)
    records = []
    for order in args.orders:
        for name in args.systems:
            for seed in args.seeds:
                r = run_one(name, seed, args, images, speech, category, order)
                records.append(r)
                err = (f", transitions max abs error {r['trans_err_generating']:.3f} (generating), "
                       f"{r['trans_err_empirical']:.3f} (true labels' frequencies)") if "trans_err_generating" in r else ""
                print(f"{name} {order} seed {seed}: accuracy {r['accuracy']:.3f} (per iteration "
                      f"{', '.join(f'{a:.3f}' for a in r['accuracy_per_iteration'])}){err}, {r['seconds']:.0f} s",
                      flush=True)
                if args.json:
                    with open(args.json, "w") as f:
                        json.dump(records, f, indent=1)
    print(f"\n{len(images)} points from {source}; {args.iterations} outer iterations, VAE {args.epochs} epochs"
          f"{' (deskewed images)' if args.deskew else ' (raw pixels)'}, "
          f"{args.threads} thread(s)\n")
    print("| system | order | accuracy mean | min..max | largest drop between iterations | ARI | NMI "
          "| seconds per run | original (cyclic) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for order in args.orders:
        for name in args.systems:
            rs = [r for r in records if r["system"] == name and r["order"] == order]
            a = np.array([r["accuracy"] for r in rs])
            print(f"| {name} | {order} | {a.mean():.3f} | {a.min():.3f}..{a.max():.3f} | "
                  f"{max(r['largest_drop'] for r in rs):.3f} | {np.mean([r['ari'] for r in rs]):.3f} | "
                  f"{np.mean([r['nmi'] for r in rs]):.3f} | {np.mean([r['seconds'] for r in rs]):.0f} | "
                  f"{ORIGINAL[name] if order == 'cyclic' else '-'} |")
    return records


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--orders", nargs="+", default=["cyclic"], choices=["cyclic", "random", "markov"],
                   help="order of the rows: the tutorial's cyclic order, shuffled, or partly ordered")
    p.add_argument("--p-next", type=float, default=0.7,
                   help="markov order: probability that the next digit is the cyclic successor")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--latent-dim", type=int, default=18)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default=os.path.join("runs", "tutorials"))
    p.add_argument("--json", default=None, help="write per-run records here")
    p.add_argument("--mm-evidence-model", choices=["auto", "noise", "confusion"], default=None,
                   help="the Markov model's evidence_model (default: the module's)")
    p.add_argument("--mlda-parent-weight", choices=["auto", "document", "token"], default=None,
                   help="how the MLDA applies its parents' class messages (MLDA(parent_weight=...); default: "
                        "the module's, 'auto')")
    p.add_argument("--mlda-split-merge", type=int, default=None,
                   help="MLDA split-merge moves per update (MLDA(split_merge=...); default: the module's, 3)")
    p.add_argument("--gmm-kmeans-restarts", type=int, default=None,
                   help="every GMM's kmeans_restarts (default: the module's, 10)")
    p.add_argument("--gmm-screen-sweeps", type=int, default=None,
                   help="every GMM's screen_sweeps (default: the module's, 0); 40 with "
                        "--gmm-kmeans-restarts 1 is the fast setting of README 'Speed against the peers'")
    p.add_argument("--deskew", action=argparse.BooleanOptionalAction, default=True,
                   help="VAE(deskew=True), default: the VAE deskews the images first; --no-deskew: raw pixels")
    main(p.parse_args())
