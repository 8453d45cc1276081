"""The VAE+GMM+MLDA tutorial on its original HAC vs on the re-created speech, and recognition of new speakers.

The tutorial's HAC histograms came with no codebooks, so a graph trained on them cannot turn new
speech into features.  ``serket-pyro run ... --speech ours`` trains on the same 3,000 rows with
the speech observation computed by this package from the same utterances' MFCC
(:func:`serket_pyro.datasets.load_tutorial_speech` -> :class:`serket_pyro.modules.hac.HACFeatureExtractor`),
and saves the codebooks with the graph.  This script

1. trains VAE+GMM+MLDA with ``--speech tutorial`` and ``--speech ours`` for ``--seeds``
   (tutorial settings: 5 outer iterations, VAE 200 epochs) and prints the MLDA's accuracy and the
   seconds of each run;
2. writes ``--n-test`` held-out pairs (``heldout/``): utterances of the 22 UCI *test* speakers as
   raw MFCC frames (``speech.npz``: ``frames``, ``lengths``), MNIST *test* images of the same
   digits (``images.npy``) and the digits (``category.txt``), rows in the cyclic digit order;
3. recognises them with the saved ``--speech ours`` graph through the command line
   (``serket-pyro recog SAVED --data obs1=images.npy --data obs2=speech.npz --category ...``):
   the saved codebooks turn the new speech into counts.

Usage::

    python benchmarks/recreated_tutorial.py --seeds 0 1 --out /tmp/recreated
    python benchmarks/recreated_tutorial.py --seeds 0 --epochs 5 --iterations 2 --out /tmp/quick

Data: ``serket_tutorial.npz``, ``spoken_arabic_digit.npz`` and ``mnist.npz`` from
``$SERKET_PYRO_DATA``.  Please cite MNIST, UCI Spoken Arabic Digit (Hammami and Bedda 2008) and
Serket (Nakamura, Nagai, Taniguchi 2018).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from serket_pyro import reset_module_counter
from serket_pyro.app.cli import build_parser
from serket_pyro.app.runner import recognise, run_system
from serket_pyro.datasets import load_mnist, load_spoken_arabic_digit
from serket_pyro.datasets.paired_data import build_pairs


def write_heldout(folder, n, seed, data_dir=None):
    """``speech.npz`` (MFCC frames + lengths), ``images.npy`` and ``category.txt`` of ``n`` held-out pairs."""
    os.makedirs(folder, exist_ok=True)
    te = load_spoken_arabic_digit("test", root=data_dir)
    mn = load_mnist("test", root=data_dir)
    img, sp = build_pairs(mn.labels, te.digit, n, "cyclic", "random", seed)
    utt = te.utterances()
    chosen = [utt[i] for i in sp]
    np.savez(os.path.join(folder, "speech.npz"), frames=np.concatenate(chosen),
             lengths=np.array([len(u) for u in chosen], dtype=np.int64))
    np.save(os.path.join(folder, "images.npy"), mn.images[img].reshape(n, -1).astype(np.float32) / 255.0)
    np.savetxt(os.path.join(folder, "category.txt"), te.digit[sp], fmt="%d")
    assert np.array_equal(te.digit[sp], mn.labels[img])
    return folder


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--speech", nargs="+", default=["tutorial", "ours"])
    p.add_argument("--out", default=os.path.join("runs", "recreated_tutorial"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for seed in a.seeds:
        for speech in a.speech:
            out = os.path.join(a.out, f"{speech}_seed{seed}")
            flags = ["run", "vae_gmm_mlda", "--speech", speech, "--seed", str(seed), "--epochs", str(a.epochs),
                     "--iterations", str(a.iterations), "--output", out, "--no-progress"]
            if speech == "ours":
                flags += ["--save", os.path.join(out, "saved")]
            reset_module_counter()
            t0 = time.perf_counter()
            system, _, _ = run_system("vae_gmm_mlda", build_parser().parse_args(flags))
            secs = time.perf_counter() - t0
            acc = system.result_module.metrics_["accuracy"]
            gmm = system.modules["gmm"].metrics_["accuracy"]
            rows.append((speech, seed, acc, gmm, secs))
            print(f"learn  speech={speech:8s} seed={seed}  MLDA accuracy {acc:.3f}  (GMM {gmm:.3f})  {secs:.0f} s",
                  flush=True)
            if speech == "ours":
                held = write_heldout(os.path.join(a.out, "heldout"), a.n_test, 1)
                reset_module_counter()
                rec = build_parser().parse_args(
                    ["recog", os.path.join(out, "saved"), "--data", f"obs1={held}/images.npy",
                     "--data", f"obs2={held}/speech.npz", "--category", f"{held}/category.txt",
                     "--output", os.path.join(out, "recog"), "--seed", str(seed), "--no-progress"])
                t0 = time.perf_counter()
                rsys, _, _ = recognise(rec.folder, rec)
                secs = time.perf_counter() - t0
                print(f"recog  held-out speakers seed={seed}  MLDA accuracy {rsys.result_module.metrics_['accuracy']:.3f}"
                      f"  (GMM on the images {rsys.modules['gmm'].metrics_['accuracy']:.3f})  {secs:.0f} s", flush=True)
    return rows


if __name__ == "__main__":
    main()
