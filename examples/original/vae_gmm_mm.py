"""The original Serket's VAE+GMM+MM example in its 2021-2023 form (``examples/VAE-GMM-MM``), on serket_pyro.

The original's calls, imports changed: a ``vae_model`` subclass of ``vae.VAE`` that builds its own
encoder and decoder, ``vae_model(18, epoch=200, batch_size=500)``, ``gmm.GMM(10)`` without labels,
``mm.MarkovModel()`` over the GMM's classes (the images come in the cyclic order 0, 1, ..., 9),
5 outer iterations; the labels score the GMM's classes afterwards (ARI as the original prints,
and accuracy).  Data: the tutorial's 3,000 images (``serket_pyro.datasets.load_tutorial``,
``$SERKET_PYRO_DATA``).  Quick run: ``python examples/original/vae_gmm_mm.py --n 300 --epoch 2
--iterations 2``.
"""

import argparse

import numpy as np
import torch
from torch import nn

import serket_pyro as srk
from serket_pyro import datasets, gmm, mm, vae
from serket_pyro.metrics import summarize

encoder_dim = 128
decoder_dim = 128


class Encoder(nn.Module):
    """``x -> (mu, logvar)``: the original's ``build_encoder`` (784-128 relu, two heads)."""

    def __init__(self, input_dim, latent_dim):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(input_dim, encoder_dim), nn.ReLU())
        self.mu, self.logvar = nn.Linear(encoder_dim, latent_dim), nn.Linear(encoder_dim, latent_dim)

    def forward(self, x):
        h = self.hidden(x)
        return self.mu(h), self.logvar(h)


class vae_model(vae.VAE):  # noqa: N801 - the original's name
    # the VAE builds its networks with these hooks (torch: the encoder returns (mu, log_var))
    def build_encoder(self, input_dim, latent_dim):
        return Encoder(input_dim, latent_dim)

    def build_decoder(self, input_dim, latent_dim):
        return nn.Sequential(nn.Linear(latent_dim, decoder_dim), nn.ReLU(), nn.Linear(decoder_dim, input_dim))


def main(args):
    torch.set_num_threads(args.threads)
    srk.set_seed(args.seed)
    srk.set_output_root(args.output)
    d = datasets.load_tutorial(root=args.data_dir)
    data, labels = d.images[:args.n], d.category[:args.n]

    # Create instances of the modules.
    obs = srk.Observation(data)
    vae1 = vae_model(args.latent_dim, epoch=args.epoch, batch_size=args.batch_size)
    gmm1 = gmm.GMM(args.K)
    mm1 = mm.MarkovModel()

    # Connect modules.
    vae1.connect(obs)
    gmm1.connect(vae1)
    mm1.connect(gmm1)

    # Train the integrated model.
    for i in range(args.iterations):
        print(i)
        vae1.update()
        gmm1.update()
        mm1.update()

    # Classification accuracy of the GMM's classes.
    pred_labels = np.argmax(gmm1.get_forward_msg(), axis=1)
    scores = summarize(labels, pred_labels)
    print(f"ARI: {scores['ari']:.3f}  accuracy: {scores['accuracy']:.3f}")
    return scores["accuracy"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3000, help="number of data points (3000)")
    p.add_argument("--latent-dim", type=int, default=18, help="VAE latent dimension (18)")
    p.add_argument("--epoch", type=int, default=200, help="VAE epochs per update (200)")
    p.add_argument("--batch-size", type=int, default=500, help="VAE minibatch (500)")
    p.add_argument("--K", type=int, default=10, help="GMM classes (10)")
    p.add_argument("--iterations", type=int, default=5, help="outer iterations (5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="folder of serket_tutorial.npz (default $SERKET_PYRO_DATA)")
    p.add_argument("--output", default=".", help="folder of the module folders (default: here, as the original)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
