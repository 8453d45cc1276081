"""The MLDA module against tomotopy's LDA (collapsed Gibbs in C++), in one process, CPU time.

Run (``pip install -e '.[bench]'`` for the peer)::

    python benchmarks/mlda_peers.py                    # the tutorial's HAC speech, 616k tokens
    python benchmarks/mlda_peers.py --seeds 0 1 2

``MLDA(10).update()`` with its defaults (100 sweeps, split-merge moves) on the 3,000 HAC speech
histograms of the tutorial (raw counts: 616,452 tokens), against ``tomotopy.LDAModel(k=10,
alpha=1, eta=1)`` trained 100 iterations on the same documents (one worker).  Single thread; CPU
seconds (``time.process_time``) per seed (tomotopy: ``train`` alone; building its corpus of
word strings, column "corpus", is extra); accuracy of each document's most probable topic against
the digit (best one-to-one matching).  Data from ``$SERKET_PYRO_DATA``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import serket_pyro as srk  # noqa: E402
from serket_pyro.datasets import load_tutorial  # noqa: E402
from serket_pyro.metrics import accuracy  # noqa: E402
from serket_pyro.modules import MLDA  # noqa: E402


def tomotopy_lda(counts: np.ndarray, k: int, iterations: int, seed: int):
    """Most probable topic of each document after ``iterations`` of tomotopy's collapsed Gibbs,
    and the CPU seconds of building the corpus and of training."""
    import tomotopy as tp
    t0 = time.process_time()
    model = tp.LDAModel(k=k, alpha=1.0, eta=1.0, seed=seed)
    vocab = np.array([f"w{j}" for j in range(counts.shape[1])])
    for row in counts.astype(np.int64):
        model.add_doc(np.repeat(vocab, row).tolist())
    t1 = time.process_time()
    model.train(iterations, workers=1)
    t2 = time.process_time()
    return np.array([int(np.argmax(doc.get_topic_dist())) for doc in model.docs]), t1 - t0, t2 - t1


def main(args=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iterations", type=int, default=100, help="tomotopy iterations (MLDA: its default itr)")
    p.add_argument("--split-merge-screen", action="store_true",
                   help="MLDA(split_merge_screen=True): rounds of split-merge moves by successive halving")
    a = p.parse_args(args)
    torch.set_num_threads(1)
    d = load_tutorial(os.environ.get("SERKET_PYRO_DATA"))
    counts, y = np.asarray(d.hac), np.asarray(d.category)
    root = tempfile.mkdtemp(prefix="mlda_peers_")
    rows = []
    print(f"MLDA(10).update() vs tomotopy LDA {a.iterations} iterations, {int(counts.sum())} tokens: "
          "CPU seconds, accuracy")
    print(f"{'seed':>4}  {'MLDA':>7}  {'tomotopy':>8}  {'ratio':>5}  {'acc MLDA':>8}  {'acc tomotopy':>12}  "
          f"{'corpus':>6}")
    for seed in a.seeds:
        srk.reset_module_counter()
        srk.set_seed(seed)
        m = MLDA(10, category=y, output_root=root, split_merge_screen=a.split_merge_screen)
        m.connect(srk.Observation(counts))
        t = time.process_time()
        m.update()
        ts = time.process_time() - t
        acc_s = accuracy(y, np.asarray(m.theta_).argmax(-1))
        zt, tb, tt = tomotopy_lda(counts, 10, a.iterations, seed)
        acc_t = accuracy(y, zt)
        rows.append((seed, ts, tt, acc_s, acc_t, tb))
        print(f"{seed:>4}  {ts:>7.2f}  {tt:>8.2f}  {ts / tt:>5.1f}  {acc_s:>8.3f}  {acc_t:>12.3f}  {tb:>6.2f}", flush=True)
    med = [statistics.median(r[i] for r in rows) for i in range(1, 6)]
    print(f"{'med':>4}  {med[0]:>7.2f}  {med[1]:>8.2f}  {med[0] / med[1]:>5.1f}  {med[2]:>8.3f}  {med[3]:>12.3f}  "
          f"{med[4]:>6.2f}")
    return rows


if __name__ == "__main__":
    main()
