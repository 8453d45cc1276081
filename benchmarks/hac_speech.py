"""HAC speech features computed by ``serket_pyro.features`` vs the Serket tutorial's precomputed HAC.

Both describe the *same* 3,000 UCI Spoken Arabic Digit training utterances (the tutorial used the
first 300 utterances of each digit, speakers 0-29; ``serket_tutorial.npz`` row ``n`` is utterance
``(n % 10) * 660 + n // 10`` of the train file -- its per-block row sums equal that utterance's
``T - 5`` / ``T - 2``).  For each feature set the table gives the accuracy (Hungarian matching) of
MLDA(10) on the speech alone, raw counts and ``weights=[200]``, after ``--outer`` warm-started
updates of ``--itr`` Gibbs sweeps, over ``--seeds`` seeds.  With ``--recog`` it also scores
recognition of 1,000 utterances of the 22 held-out test speakers with the learned topics fixed
(``MLDA(mode="recog")`` + ``load_state_dict``).  With ``--fsdd`` it adds rows for the Free Spoken
Digit Dataset (English audio -> :func:`~serket_pyro.features.mfcc` with CMN -> HAC): every training
recording once, speaker "theo" held out, and the official ``take < 5`` split.

Usage::

    python benchmarks/hac_speech.py                  # 3 seeds, 5 updates of 100 sweeps
    python benchmarks/hac_speech.py --seeds 1 --outer 2 --itr 50   # quick look
    python benchmarks/hac_speech.py --recog --fsdd   # + held-out speakers, + FSDD rows

Data are read from ``$SERKET_PYRO_DATA`` (default ``../shared/data``).  Please cite UCI Spoken Arabic
Digit (Hammami and Bedda 2008) and Serket (Nakamura, Nagai, Taniguchi 2018).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pyro
import torch

import serket_pyro as srk
from serket_pyro.datasets import load_spoken_arabic_digit
from serket_pyro.features import HACExtractor
from serket_pyro.modules.mlda import MLDA

DATA_DIR = os.environ.get("SERKET_PYRO_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def tutorial_rows(n: int = 3000) -> np.ndarray:
    """SAD train utterances of the tutorial's rows: ``(n % 10) * 660 + n // 10``."""
    r = np.arange(n)
    return (r % 10) * 660 + r // 10


def run_mlda(hac, category, weights, seed, outer, itr, root, test=None):
    """Accuracy after ``outer`` updates; with ``test=(hac, category)`` also recognition accuracy."""
    pyro.set_rng_seed(seed)
    srk.reset_module_counter()
    m = MLDA(10, weights, itr=itr, category=category, save_predictions=False, output_root=root)
    m.connect(srk.Observation(np.asarray(hac, dtype=np.float64)))
    for _ in range(outer):
        m.update()
    acc = m.metrics_["accuracy"]
    rec = float("nan")
    if test is not None:
        r = MLDA(10, weights, itr=itr, category=test[1], save_predictions=False, output_root=root, mode="recog")
        r.load_state_dict({"theta": m.theta_, **{f"phi.{i}": p for i, p in enumerate(m.phi_)}})
        r.connect(srk.Observation(np.asarray(test[0], dtype=np.float64)))
        r.update()
        # same topic -> digit matching as on the training data: recognise with the training map
        train_map = _topic_map(m.theta_.argmax(1).numpy(), category)
        rec = float((train_map[r.theta_.argmax(1).numpy()] == test[1]).mean())
    return acc, rec


def _topic_map(topic, category, K=10):
    """Hungarian topic -> digit map learned on the training documents."""
    from scipy.optimize import linear_sum_assignment

    c = np.zeros((K, K))
    np.add.at(c, (topic, category), 1)
    rows, cols = linear_sum_assignment(-c)
    out = np.zeros(K, dtype=np.int64)
    out[rows] = cols
    return out


def main(args=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=DATA_DIR)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--outer", type=int, default=5, help="warm-started MLDA updates")
    p.add_argument("--itr", type=int, default=100, help="Gibbs sweeps per update")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--recog", action="store_true", help="also score 1,000 held-out-speaker test utterances")
    p.add_argument("--fsdd", action="store_true",
                   help="also FSDD (English audio -> MFCC -> HAC): speaker 'theo' held out, and the take < 5 split")
    a = p.parse_args(args)
    torch.set_num_threads(a.threads)

    tut = np.load(os.path.join(a.data_dir, "serket_tutorial.npz"))
    category = tut["category"]
    sad = load_spoken_arabic_digit("train", root=a.data_dir)
    utts = sad.utterances()
    rows = tutorial_rows()
    assert (sad.digit[rows] == category).all()
    seqs = [utts[i] for i in rows]
    sad_te = load_spoken_arabic_digit("test", root=a.data_dir)
    r = np.arange(1000)
    te_rows = (r % 10) * 220 + r // 10  # first 100 utterances of each digit (test speakers 0-9)
    te_seqs = [sad_te.utterances()[i] for i in te_rows]
    te_cat = sad_te.digit[te_rows]

    feats = [("tutorial precomputed HAC", tut["hac"].astype(np.int64), None)]
    for std in (False, True):
        t0 = time.perf_counter()
        ex = HACExtractor(20, (5, 2), ("static", "delta", "delta2"), standardize=std, seed=0).fit(seqs)
        h = ex.transform(seqs)
        sec = time.perf_counter() - t0
        same_sums = bool((h.reshape(3000, 6, 400).sum(2) == tut["hac"].reshape(3000, 6, 400).sum(2)).all())
        print(f"serket_pyro HAC (standardize={std}): fit + transform {sec:.1f} s, row-block sums equal the "
              f"tutorial's: {same_sums}")
        feats.append((f"serket_pyro HAC, standardize={std}", h, ex))

    print(f"\nMLDA(10) on the speech alone, 3,000 SAD utterances (tutorial rows), {a.outer} updates x {a.itr} sweeps, "
          f"seeds 0..{a.seeds - 1}; accuracy = Hungarian, mean +- sd over seeds"
          + ("; recog = 1,000 utterances of the 22 held-out speakers, topics fixed" if a.recog else ""))
    print(f"{'features':<36}{'weights':<9}{'train acc':>18}{'recog acc (held-out)':>26}")
    out = []
    with tempfile.TemporaryDirectory() as root:
        for name, h, ex in feats:
            test = None
            if a.recog and ex is not None:
                test = (ex.transform(te_seqs), te_cat)
            for w in (None, [200]):
                res = np.array([run_mlda(h, category, w, s, a.outer, a.itr, root, test) for s in range(a.seeds)])
                out.append((name, w, res))
                rec = f"{res[:, 1].mean():.3f} +- {res[:, 1].std():.3f}" if test is not None else "-"
                print(f"{name:<36}{w!s:<9}{res[:, 0].mean():>10.3f} +- {res[:, 0].std():.3f}{rec:>26}   "
                      f"{np.round(res[:, 0], 3).tolist()}")
        if a.fsdd:
            out += fsdd_rows(a, root)
    return out


def fsdd_rows(a, root):
    """MLDA(10) on FSDD HAC alone: every training recording once, recognition of the test split."""
    from serket_pyro.datasets.paired_data import build_fsdd_pairs

    rows = []
    for holdout, n_tr, n_te, label in (("speaker", 2500, 500, "FSDD, speaker 'theo' held out"),
                                       ("take", 2700, 300, "FSDD, take < 5 (same speakers)")):
        t0 = time.perf_counter()
        sp = build_fsdd_pairs(n_tr, n_te, holdout=holdout, root=a.data_dir)
        sec = time.perf_counter() - t0
        for w in (None, [200]):
            res = np.array([run_mlda(sp.train.hac, sp.train.category, w, s, a.outer, a.itr, root,
                                     (sp.test.hac, sp.test.category)) for s in range(a.seeds)])
            rows.append((label, w, res))
            rec = f"{res[:, 1].mean():.3f} +- {res[:, 1].std():.3f}"
            print(f"{label:<36}{w!s:<9}{res[:, 0].mean():>10.3f} +- {res[:, 0].std():.3f}{rec:>26}   "
                  f"{np.round(res[:, 0], 3).tolist()}   (MFCC + HAC {sec:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
