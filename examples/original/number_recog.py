"""number_recog (the original's ``examples/number_recog``): spoken and written digits share a category (TtoT).

    python examples/original/number_recog.py                       # the original's settings (40 iterations)
    python examples/original/number_recog.py --n 500 --iterations 3 --epochs 5

The original connected an MLDA on spoken words (``word_recog.WordRecog``, the Julius / NPYLM
recogniser, Windows binaries -- out of scope here) and a VAE+GMM on images through
``TtoT.TtoT()``, a tail-to-tail node: one category ``c_n`` per data point that both the MLDA's
and the GMM's classes depend on (:class:`serket_pyro.modules.ttot.TtoT`).  Here the speech
module is :class:`serket_pyro.modules.hac.HACFeatureExtractor` on the Serket tutorial's utterances
(UCI Spoken Arabic Digit MFCC, :func:`serket_pyro.datasets.load_tutorial_speech`) and the images
are the tutorial's MNIST images: the same digits, the same order, a bag of acoustic co-occurrences
instead of recognised words.  The update order is the original's.
"""

import argparse
import os
import sys
import time

import serket_pyro as srk
from serket_pyro import TtoT, gmm, hac, mlda, vae
from serket_pyro.datasets import load_tutorial_speech


def main(args):
    t0 = time.perf_counter()
    srk.set_seed(args.seed)
    srk.set_output_root(args.output)
    d = load_tutorial_speech(root=args.data_dir)
    n = args.n
    images, category = d.images[:n], d.category[:n]

    obs1 = srk.Observation(images)
    speech = hac.HACFeatureExtractor(d.utterances[:n], [20, 20, 20], lags=[5, 2], seed=args.seed)
    lda1 = mlda.MLDA(10, [args.weight], category=category)
    vae1 = vae.VAE(args.latent_dim, itr=args.epochs, batch_size=args.batch_size)
    gmm1 = gmm.GMM(10, itr=args.gmm_itr, category=category)
    tt = TtoT.TtoT(category=category)

    lda1.connect(speech)
    vae1.connect(obs1)
    gmm1.connect(vae1)
    tt.connect(lda1, gmm1)

    for i in range(args.iterations):  # the original's order; the extractor's counts never change
        lda1.update()
        tt.update()
        vae1.update()
        gmm1.update()
        tt.update()
        print(f"iteration {i}: MLDA {lda1.metrics_['accuracy']:.3f}  GMM {gmm1.metrics_['accuracy']:.3f}  "
              f"shared category {tt.metrics_['accuracy']:.3f}", flush=True)
    acc = tt.metrics_["accuracy"]
    print(f"number_recog: shared category accuracy {acc:.3f} (MLDA {lda1.metrics_['accuracy']:.3f}, "
          f"GMM {gmm1.metrics_['accuracy']:.3f}) in {time.perf_counter() - t0:.0f} s")
    return acc


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3000, help="pairs (original: 3,000)")
    p.add_argument("--iterations", type=int, default=40, help="outer iterations (original: 40)")
    p.add_argument("--latent-dim", type=int, default=10, help="VAE latent dimensions (original: 10)")
    p.add_argument("--epochs", type=int, default=200, help="VAE epochs per update (original: itr=200)")
    p.add_argument("--batch-size", type=int, default=500, help="VAE minibatch (original: 500)")
    p.add_argument("--gmm-itr", type=int, default=50, help="GMM Gibbs sweeps per update (original: 50)")
    p.add_argument("--weight", type=float, default=100.0, help="MLDA weight of the speech (original: 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="folder of serket_tutorial.npz and spoken_arabic_digit.npz")
    p.add_argument("--output", default=os.path.join("runs", "number_recog"))
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
