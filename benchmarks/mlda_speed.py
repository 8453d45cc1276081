"""Speed and accuracy of the MLDA module.

The original Serket MLDA (collapsed Gibbs, a Cython loop over tokens) did not finish one update of
the VAE+GMM+MLDA tutorial corpus in 8 minutes.  This script times

* one Gibbs sweep and one ``update()`` (``itr`` sweeps, messages by fold-in, files) on the tutorial
  corpus: the 3,000 HAC speech histograms (2,400 bins) plus a 10-class probability modality,
  ``weights=[200, 200]`` (the tutorial's MLDA).  The class-probability modality stands in for the
  GMM's forward message: for each document a noisy class distribution around its digit (confidence
  0.6, a wrong class for 30 % of the documents), so the timing needs no VAE;
* accuracy (Hungarian; greedy swap beside it) of MLDA(10) on the HAC speech alone (raw counts and
  ``weights=[200]``) and on the mMLDA objects data (dsift, mfcc, tactile; ``[200, 200, 200]``,
  object categories), default rules vs the original rules (``token_rule="original"``,
  ``backward="original"``, ``forward="original"``) run by the same sampler, over several seeds.

Usage::

    python benchmarks/mlda_speed.py                       # 1 thread, 3 seeds, 5 outer iterations
    python benchmarks/mlda_speed.py --seeds 5 --threads 2
    python benchmarks/mlda_speed.py --skip-accuracy       # timings only

Data are read from ``$SERKET_PYRO_DATA`` (default ``../shared/data``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import numpy as np
import pyro
import torch

import serket_pyro as srk
from serket_pyro.messages import ClassProbs
from serket_pyro.modules.mlda import MLDA, _gibbs_sweep, _Modality, fold_in
from timing import time_calls

DATA_DIR = os.environ.get("SERKET_PYRO_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
ORIGINAL = {"token_rule": "original", "backward": "original", "forward": "original"}


def class_modality(category: np.ndarray, K: int = 10, conf: float = 0.6, wrong: float = 0.3, seed: int = 0):
    """``(N, K)`` noisy class probabilities around ``category`` (a stand-in for a GMM's message)."""
    rng = np.random.default_rng(seed)
    label = category.copy()
    flip = rng.random(len(label)) < wrong
    label[flip] = (label[flip] + rng.integers(1, K, int(flip.sum()))) % K
    probs = np.full((len(label), K), (1 - conf) / (K - 1))
    probs[np.arange(len(label)), label] = conf
    probs *= rng.uniform(0.8, 1.2, probs.shape)
    return probs / probs.sum(1, keepdims=True)


def speed(a, root) -> list[tuple[str, float, float]]:
    d = np.load(os.path.join(a.data_dir, "serket_tutorial.npz"))
    hac, category = d["hac"], d["category"]
    probs = class_modality(category)
    pyro.set_rng_seed(a.seed)
    srk.reset_module_counter()
    mlda = MLDA(10, [200, 200], itr=a.itr, category=category, save_predictions=False, output_root=root)
    mlda.connect(srk.Observation(hac), srk.Observation(ClassProbs.from_probs(probs)))
    first = time_calls(mlda.update, 1)[0]
    acc = mlda.metrics_["accuracy"]
    warm = time_calls(mlda.update, a.updates)
    n_tokens = mlda.metrics_["n_tokens"]

    counts, _ = mlda.token_counts()
    t_tokens = time_calls(mlda.token_counts, 3)
    mods = [_Modality.build(c) for c in counts]
    t_build = time_calls(lambda: [_Modality.build(c) for c in counts], 3)
    state = [mlda._theta_draw.unsqueeze(0), [p.unsqueeze(0) for p in mlda._phi_draw]]

    def sweep():
        theta, phis, _, _ = _gibbs_sweep(state[0], state[1], mods, None, mlda.alpha, mlda.beta)
        state[:] = [theta, phis]

    for _ in range(3):
        sweep()
    sweeps = time_calls(sweep, a.sweeps)
    t_fold = time_calls(lambda: fold_in(mods, mlda.phi_, mlda.alpha), 3)
    t_fold_hac = time_calls(lambda: fold_in(mods[:1], mlda.phi_[:1], mlda.alpha), 3)

    rows = [
        ("one Gibbs sweep", statistics.median(sweeps), min(sweeps)),
        ("token counts from the messages (both modalities)", statistics.median(t_tokens), min(t_tokens)),
        ("token layout (_Modality.build)", statistics.median(t_build), min(t_build)),
        ("fold-in, both modalities (forward message)", statistics.median(t_fold), min(t_fold)),
        ("fold-in, HAC only (backward message to the GMM)", statistics.median(t_fold_hac), min(t_fold_hac)),
        (f"first update() (itr={a.itr}, messages, files)", first, first),
        (f"warm update() (itr={a.itr}, messages, files)", statistics.median(warm), min(warm)),
    ]
    print(f"MLDA speed: tutorial corpus N=3000, HAC V=2400 + 10-class modality, weights [200, 200], "
          f"{n_tokens:.0f} tokens, K=10, torch threads={a.threads}, torch {torch.__version__}")
    print(f"{'what':<52}{'median':>12}{'min':>12}")
    for name, med, mn in rows:
        print(f"{name:<52}{med * 1e3:>10.1f}ms{mn * 1e3:>10.1f}ms")
    print(f"accuracy after the first update (HAC + noisy class modality): {acc:.3f}")
    print("original Serket: one update did not finish in 8 minutes\n")
    return rows


def _run(children, category, K, weights, rules, seed, updates, itr, root):
    pyro.set_rng_seed(seed)
    srk.reset_module_counter()
    mlda = MLDA(K, weights, itr=itr, category=category, save_predictions=False, output_root=root, **rules)
    mlda.connect(*(srk.Observation(c) for c in children))
    accs = []
    for _ in range(updates):
        mlda.update()
        accs.append((mlda.metrics_["accuracy"], mlda.metrics_["greedy_accuracy"]))
    return accs


def accuracy(a, root) -> list[tuple]:
    tut = np.load(os.path.join(a.data_dir, "serket_tutorial.npz"))
    obj = np.load(os.path.join(a.data_dir, "serket_objects.npz"))
    cases = [
        ("HAC alone, raw counts", [tut["hac"]], tut["category"], None),
        ("HAC alone, weights [200]", [tut["hac"]], tut["category"], [200]),
        ("objects dsift+mfcc+tactile, [200]*3", [obj["dsift"], obj["mfcc"], obj["tactile"]],
         obj["object_category"], [200, 200, 200]),
    ]
    rows = []
    print(f"MLDA(10) accuracy (Hungarian / greedy swap), itr={a.itr}, seeds 0..{a.seeds - 1} "
          f"(objects: 0..{a.object_seeds - 1}), after update 1 and update {a.outer} (warm-started)")
    print(f"{'data':<38}{'rules':<10}{'update 1 (mean +- sd)':>24}{f'update {a.outer}':>22}{'greedy':>10}")
    for name, children, category, weights in cases:
        for label, rules in (("default", {}), ("original", ORIGINAL)):
            n_seeds = a.object_seeds if name.startswith("objects") else a.seeds
            res = [_run(children, category, 10, weights, rules, s, a.outer, a.itr, root) for s in range(n_seeds)]
            first = np.array([r[0][0] for r in res])
            last = np.array([r[-1][0] for r in res])
            greedy = np.array([r[-1][1] for r in res])
            rows.append((name, label, first, last, greedy))
            shown = np.round(last, 3).tolist() if len(last) <= 5 else ""
            print(f"{name:<38}{label:<10}{first.mean():>14.3f} +- {first.std():.3f}"
                  f"{last.mean():>12.3f} +- {last.std():.3f}{greedy.mean():>10.3f}   {shown}")
    print("original Serket: HAC alone about 0.70")
    return rows


def main(args=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=DATA_DIR)
    p.add_argument("--itr", type=int, default=100, help="Gibbs sweeps per update (original 100)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sweeps", type=int, default=20, help="sweeps timed one by one")
    p.add_argument("--updates", type=int, default=2, help="warm update() calls timed")
    p.add_argument("--seeds", type=int, default=3, help="seeds for the accuracy table (speech)")
    p.add_argument("--object-seeds", type=int, default=20, help="seeds for the objects data (50 documents)")
    p.add_argument("--outer", type=int, default=5, help="outer iterations (updates) for the accuracy table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    a = p.parse_args(args)
    torch.set_num_threads(a.threads)
    out = {}
    with tempfile.TemporaryDirectory() as root:
        if not a.skip_speed:
            out["speed"] = speed(a, root)
        if not a.skip_accuracy:
            out["accuracy"] = accuracy(a, root)
    return out


if __name__ == "__main__":
    main()
