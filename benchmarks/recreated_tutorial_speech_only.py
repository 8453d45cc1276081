"""Speech-only recognition of held-out speakers with a graph saved by ``run vae_gmm_mlda --speech ours``.

The saved MLDA reads (speech counts, the GMM's classes of the images); here the image side is
replaced by all-zero counts, which MLDA treats as a missing modality, so its classes come from the
new speech alone, turned into counts by the saved codebooks.

Usage::

    python benchmarks/recreated_tutorial_speech_only.py SAVED HELDOUT

``SAVED``: the saved graph; ``HELDOUT``: the folder ``benchmarks/recreated_tutorial.py`` writes
(``speech.npz``, ``images.npy``, ``category.txt``).
"""

import sys
import tempfile

import numpy as np
import torch

import serket_pyro as srk
from serket_pyro.datasets import split_by_lengths


def main(saved, held):
    torch.set_num_threads(1)
    with np.load(f"{held}/speech.npz") as z:
        speech = split_by_lengths(z["frames"], z["lengths"])
    cat = np.loadtxt(f"{held}/category.txt").astype(int)
    images = np.load(f"{held}/images.npy")
    srk.set_seed(0)
    with tempfile.TemporaryDirectory() as out:
        s = srk.load_graph(saved, {"obs1": images, "obs2": speech}, mode="recog", category=cat, output_root=out)
        m = s.modules["mlda"]
        m.connect(s.modules["obs2"], srk.Observation(np.zeros((len(cat), m.K))))
        m.update()
    acc = m.metrics_["accuracy"]
    print(f"speech only (held-out speakers): MLDA accuracy {acc:.3f}")
    return acc


if __name__ == "__main__":
    main(*sys.argv[1:3])
