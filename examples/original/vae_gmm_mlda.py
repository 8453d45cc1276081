"""The original Serket's VAE+GMM+MLDA example in its 2021-2023 form (``examples/VAE-GMM-MLDA``), on serket_pyro.

The original's calls, imports changed: a ``vae_model`` subclass of ``vae.VAE`` that builds its own
encoder and decoder, ``vae_model(18, epoch=200, batch_size=500)``, ``gmm.GMM(10)`` and
``mlda.MLDA(10, [200, 200])`` over the speech counts and the GMM's classes, without labels,
5 outer iterations; the labels score the MLDA's classes afterwards (ARI as the original prints,
and accuracy).  Data: the tutorial's 3,000 image / speech (HAC counts) pairs (``serket_pyro.datasets.load_tutorial``,
``$SERKET_PYRO_DATA``).  Quick run: ``python examples/original/vae_gmm_mlda.py --n 300 --epoch 2
--iterations 2``.
"""

import argparse

import numpy as np
import torch
from torch import nn

import serket_pyro as srk
from serket_pyro import datasets, gmm, mlda, vae
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
    data1, data2, labels = d.images[:args.n], d.hac[:args.n], d.category[:args.n]

    # Create instances of the modules.
    obs1 = srk.Observation(data1)
    obs2 = srk.Observation(data2)
    vae1 = vae_model(args.latent_dim, epoch=args.epoch, batch_size=args.batch_size)
    gmm1 = gmm.GMM(args.K)
    mlda1 = mlda.MLDA(args.K, [200, 200])

    # Connect modules.
    vae1.connect(obs1)
    gmm1.connect(vae1)
    mlda1.connect(obs2, gmm1)

    # Train the integrated model.
    for i in range(args.iterations):
        print(i)
        vae1.update()
        gmm1.update()
        mlda1.update()

    # Classification accuracy of the MLDA's classes.
    pred_labels = np.argmax(mlda1.get_forward_msg(), axis=1)
    scores = summarize(labels, pred_labels)
    print(f"ARI: {scores['ari']:.3f}  accuracy: {scores['accuracy']:.3f}")
    return scores["accuracy"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3000, help="number of data points (3000)")
    p.add_argument("--latent-dim", type=int, default=18, help="VAE latent dimension (18)")
    p.add_argument("--epoch", type=int, default=200, help="VAE epochs per update (200)")
    p.add_argument("--batch-size", type=int, default=500, help="VAE minibatch (500)")
    p.add_argument("--K", type=int, default=10, help="GMM and MLDA classes (10)")
    p.add_argument("--iterations", type=int, default=5, help="outer iterations (5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="folder of serket_tutorial.npz (default $SERKET_PYRO_DATA)")
    p.add_argument("--output", default=".", help="folder of the module folders (default: here, as the original)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
