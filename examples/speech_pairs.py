"""VAE+GMM+MLDA+MM on image / speech pairs built from raw data: MNIST + English audio (FSDD) and
MNIST + Spoken Arabic Digit MFCCs, speech as HAC features computed by ``serket_pyro.features``.

Run ``python examples/speech_pairs.py`` (3,000 cyclic pairs, the tutorial's settings: VAE(18) 200
epochs, GMM(10), MLDA(10, [200, 200]), 5 outer iterations) or, to try it quickly::

    python examples/speech_pairs.py --n 100 --n-test 50 --epochs 1 --iterations 1 --mlda-itr 10 \\
        --fsdd-takes 5 --no-progress

Training accuracy is that of the integrated model (the MLDA's classes).  Held-out speakers are
scored by the MLDA alone on their speech (``--no-recog`` to skip): an ``MLDA(mode="recog")`` with
the learned speech topics ``phi`` fixed (``load_state_dict``) classifies the test utterances, the
topics mapped to digits by the Hungarian matching learned on the training pairs ("train map") or
re-matched on the test set (the module's own ``accuracy``).  Speakers of train and test are
disjoint: SAD by its train / test files (66 / 22 speakers); FSDD by holding out ``--fsdd-test-speaker``
(``--fsdd-holdout take`` uses the official ``take < 5`` split instead, the same speakers on both sides).

Please cite MNIST, UCI Spoken Arabic Digit (Hammami and Bedda 2008), FSDD (Jakobovski et al.) and
Serket (Nakamura, Nagai, Taniguchi 2018) when reporting results on these data.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from serket_pyro.models.vae_gmm_mlda_mm import build

import serket_pyro as srk
from serket_pyro.modules.mlda import MLDA
from serket_pyro.datasets.paired_data import build_fsdd_pairs, build_sad_pairs


def _topic_map(topic, category, K):
    """Hungarian topic -> digit map that maximises agreement on the training documents."""
    from scipy.optimize import linear_sum_assignment

    c = np.zeros((K, K))
    np.add.at(c, (topic, category), 1)
    rows, cols = linear_sum_assignment(-c)
    out = np.arange(K)
    out[rows] = cols
    return out


def recognise_speech(mlda, train, test, itr, output_root):
    """MLDA-only recognition of ``test.hac`` with the learned speech topics ``phi.0`` fixed."""
    K = mlda.K
    rec = MLDA(K, [mlda.weights[0]] if mlda.weights else None, itr=itr, category=test.category,
               save_predictions=False, mode="recog", name="mlda_recog", output_root=output_root)
    rec.load_state_dict({"theta": mlda.theta_, "phi.0": mlda.phi_[0]})
    rec.connect(srk.Observation(test.hac.astype(np.float64)))
    rec.update()
    mapping = _topic_map(mlda.theta_.argmax(1).cpu().numpy(), train.category, K)
    train_map_acc = float((mapping[rec.theta_.argmax(1).cpu().numpy()] == test.category).mean())
    return {"accuracy_train_map": train_map_acc, "accuracy_rematched": rec.metrics_["accuracy"]}


def run_one(name, splits, args):
    tr, te = splits.train, splits.test
    print(f"\n== {name}: {len(tr.category)} training pairs ({len(np.unique(tr.speaker))} speakers), "
          f"{len(te.category)} test pairs ({len(np.unique(te.speaker))} held-out speakers), "
          f"HAC {tr.hac.shape[1]} bins, order {args.order}")
    srk.reset_module_counter()
    root = os.path.join(args.output, name)
    system = build(tr.images, tr.hac.astype(np.float64), tr.category, latent_dim=args.latent_dim, epochs=args.epochs,
                   batch_size=args.batch_size, n_classes=args.classes, gmm_itr=args.gmm_itr, mlda_itr=args.mlda_itr,
                   device=args.device, output_root=root)
    t0 = time.perf_counter()
    system.fit(args.iterations, seed=args.seed, progress=not args.no_progress)
    sec = time.perf_counter() - t0
    m = system.result_module.metrics_
    out = {"train_accuracy": m["accuracy"], "train_ari": m["ari"], "seconds": sec}
    print(f"training: accuracy {m['accuracy']:.3f} (Hungarian), ARI {m['ari']:.3f}, NMI {m['nmi']:.3f} "
          f"after {args.iterations} iterations in {sec:.1f} s; files under {root}")
    if args.recog:
        r = recognise_speech(system["mlda"], tr, te, args.mlda_itr, root)
        out.update({f"test_{k}": v for k, v in r.items()})
        print(f"held-out speakers, MLDA on speech only (phi fixed): accuracy {r['accuracy_train_map']:.3f} "
              f"(training topic map), {r['accuracy_rematched']:.3f} (re-matched on test)")
    return out


def main(args):
    torch.set_num_threads(args.threads)
    results = {}
    for name in args.datasets:
        t0 = time.perf_counter()
        n = args.n if args.n is not None else (2500 if name == "fsdd" else 3000)
        if name == "fsdd":
            takes = None if args.fsdd_takes is None else range(args.fsdd_takes)
            splits = build_fsdd_pairs(n, args.n_test, reuse=args.reuse, order=args.order, holdout=args.fsdd_holdout,
                                      test_speakers=(args.fsdd_test_speaker,), takes=takes, seed=args.seed,
                                      root=args.data_dir, cmn=args.cmn, n_codewords=args.codewords)
        else:
            splits = build_sad_pairs(n, args.n_test, reuse=args.reuse, order=args.order, selection=args.sad_selection,
                                     seed=args.seed, root=args.data_dir, n_codewords=args.codewords)
        print(f"{name}: pairs and HAC features built in {time.perf_counter() - t0:.1f} s; pairs reusing an "
              f"utterance: {splits.n_reused['train']} of {n} (train), {splits.n_reused['test']} of {args.n_test} (test)")
        results[name] = run_one(name, splits, args)
    return results


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", choices=("fsdd", "sad"), default=["fsdd", "sad"])
    p.add_argument("--n", type=int, default=None,
                   help="training pairs (multiple of 10; default 3000 for sad, 2500 for fsdd: each utterance once)")
    p.add_argument("--reuse", action="store_true",
                   help="allow a split to use an utterance more than once when a digit has too few")
    p.add_argument("--n-test", type=int, default=500, help="held-out-speaker test pairs (multiple of 10)")
    p.add_argument("--order", choices=("cyclic", "random"), default="cyclic")
    p.add_argument("--codewords", type=int, default=20, help="HAC codewords per stream (tutorial: 20)")
    p.add_argument("--sad-selection", choices=("first", "random"), default="first",
                   help="SAD training utterances: 'first' = the tutorial's (first 300 per digit)")
    p.add_argument("--fsdd-holdout", choices=("speaker", "take"), default="speaker")
    p.add_argument("--fsdd-test-speaker", default="theo")
    p.add_argument("--no-cmn", dest="cmn", action="store_false",
                   help="FSDD: no cepstral mean normalisation of the recordings' MFCCs")
    p.add_argument("--fsdd-takes", type=int, default=None, help="use only takes 0..K-1 of FSDD (quick runs)")
    p.add_argument("--iterations", type=int, default=5, help="outer iterations (tutorial: 5)")
    p.add_argument("--epochs", type=int, default=200, help="VAE epochs per update (tutorial: 200)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--latent-dim", type=int, default=18)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--gmm-itr", type=int, default=100)
    p.add_argument("--mlda-itr", type=int, default=100)
    p.add_argument("--no-recog", dest="recog", action="store_false", help="skip the held-out-speaker scoring")
    p.add_argument("--data-dir", default=None, help="folder with mnist.npz, fsdd.npz, spoken_arabic_digit.npz")
    p.add_argument("--output", default="speech_pairs_out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
