"""How far above the best inertia does each k-means configuration land, on real data?

Compares :func:`serket_pyro.ops.kmeans` configurations on the data the package clusters: the
standardised MFCC streams the HAC features quantise (static, delta, delta-delta; k = 20), the
embedded MNIST subset's pixels (k = 10), the tutorial's HAC counts (k = 10) and, with
``--latents``, VAE latents (k = 10; e.g. ``module001_vae/000/z_learn.txt`` of a tutorial run).
For each set and seed it prints the inertia's excess over the best found by any run, in percent,
and the seconds per run:

* ``plain, 1 start``: k-means++ with one candidate per seed, one start (the algorithm of the
  former ``features.kmeans``),
* ``plain, 10 starts, 20 Lloyd``: the former ``gmm._kmeanspp``,
* ``greedy, 1 start`` / ``greedy, 10 starts``: greedy seeding (``2 + ln k`` candidates), the
  package's default.

Measured (2026-11-30, seeds 0-4, one thread on a loaded shared machine, so seconds are relative;
the former copies run from their own code, not from the configurations above): percent above the
best inertia found, mean over seeds (worst seed)

==================================  ===========  ==========  ===========  ==========
data, k                             former       former      greedy,      greedy,
                                    features     gmm         1 start      10 starts
==================================  ===========  ==========  ===========  ==========
SAD MFCC static (8,626 frames), 20  0.8 (1.0)    0.5 (0.7)   0.6 (0.8)    0.1 (0.2)
SAD MFCC delta, 20                  0.5 (1.1)    0.5 (0.7)   0.7 (1.0)    0.1 (0.1)
SAD MFCC delta-delta, 20            0.4 (0.8)    0.5 (0.6)   0.6 (0.7)    0.1 (0.2)
MNIST subset pixels, 10             0.4 (1.0)    0.1 (0.3)   0.5 (1.1)    0.0 (0.1)
VAE latents (tutorial seed 0), 10   0.4 (0.7)    0.0 (0.1)   0.9 (3.6)    0.1 (0.1)
VAE latents (tutorial seed 1), 10   0.5 (1.4)    0.1 (0.2)   0.4 (1.7)    0.0 (0.1)
VAE latents (tutorial seed 2), 10   0.6 (2.1)    0.0 (0.1)   0.7 (2.9)    0.0 (0.0)
tutorial HAC counts, 10             1.3 (2.3)    0.3 (0.5)   1.1 (2.3)    0.3 (0.5)
==================================  ===========  ==========  ===========  ==========

On these sets one start lands at most 3.6 % above the best (not the 36-72 % reported in issue 15
for its test sets); ten greedy starts land within 0.5 %.  One start of the new code is 1.1-4.7x
faster than the former ``features.kmeans`` (matrix-product distances, stop when no label changes;
MNIST: 2.7 s against 11.8 s); ten starts cost about ten single starts.

Usage::

    python benchmarks/kmeans.py                      # seeds 0-4
    python benchmarks/kmeans.py --seeds 0 1 --latents runs/vae_gmm/module001_vae/000/z_learn.txt
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from serket_pyro.datasets import load_mnist_subset, load_spoken_arabic_digit, load_tutorial
from serket_pyro.features import HACExtractor
from serket_pyro.ops import kmeans

CONFIGS = {
    "plain, 1 start": {"n_local_trials": 1, "n_init": 1, "max_iter": 100},
    "plain, 10 starts, 20 Lloyd": {"n_local_trials": 1, "n_init": 10, "max_iter": 20},
    "greedy, 1 start": {"n_init": 1},
    "greedy, 10 starts": {"n_init": 10},
}


def data_sets(args):
    sets = {}
    sad = load_spoken_arabic_digit("train", root=args.data_dir)
    utt = [u.astype(np.float64) for u in sad.utterances()[:: args.every]]
    for s, x in enumerate(HACExtractor()._stream_frames(utt)):
        x = (x - x.mean(0)) / x.std(0)
        sets[f"SAD MFCC stream {s} ({x.shape[0]} x {x.shape[1]}), k=20"] = (x, 20)
    x = torch.as_tensor(load_mnist_subset().as_float(), dtype=torch.float64)
    sets["MNIST subset pixels (3000 x 784), k=10"] = (x, 10)
    x = torch.as_tensor(load_tutorial(args.data_dir).hac)
    sets["tutorial HAC counts (3000 x 2400), k=10"] = (x, 10)
    for path in args.latents:
        x = torch.as_tensor(np.loadtxt(path))
        sets[f"latents {path} ({x.shape[0]} x {x.shape[1]}), k=10"] = (x, 10)
    return sets


def main(args):
    torch.set_num_threads(args.threads)
    for name, (x, k) in data_sets(args).items():
        inertia, seconds = {}, {}
        for label, kw in CONFIGS.items():
            t = time.perf_counter()
            inertia[label] = [kmeans(x, k, seed=s, **kw).inertia for s in args.seeds]
            seconds[label] = (time.perf_counter() - t) / len(args.seeds)
        best = min(min(v) for v in inertia.values())
        print(f"\n{name}: best inertia {best:.6g}")
        for label, v in inertia.items():
            excess = [100.0 * (a / best - 1.0) for a in v]
            print(f"  {label:28s} % above best: {', '.join(f'{e:5.1f}' for e in excess)}"
                  f"  (max {max(excess):5.1f}; {seconds[label]:.2f} s per run)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(5)))
    p.add_argument("--every", type=int, default=6, help="use every n-th SAD training utterance")
    p.add_argument("--latents", nargs="*", default=[], help="text files of VAE latents to cluster too")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    main(p.parse_args())
