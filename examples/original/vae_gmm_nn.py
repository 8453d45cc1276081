"""The original Serket's VAE+GMM+NN example (``examples/VAE+GMM+NN/VAE+GMM+NN.py``) in serket-pyro.

A VAE compresses the images, a GMM classifies the latents, and a supervised network (``nn.NN``)
links the GMM's classes to the second modality, the speech (HAC) features of the same data
points: it learns what each class sounds like and sends the GMM the likelihood of every point's
speech under each class.  The original's networks are written in torch here: the user's VAE
(``build_encoder`` / ``build_decoder``, 784-128-10) and the NN's model (``build_model``,
K-64-D, no output activation), with the original's settings as the defaults (10 latent
dimensions, 200 epochs, minibatches of 500, 10 classes, 10 outer iterations, ``itr1=500``,
``itr2=2000``, ``batch_size1=batch_size2=500``; raw pixels).  The NN's message is ours (the
likelihood of the speech under each class, ``serket_pyro/modules/neural.py``); ``--backward
original`` is the original's.  Its Gaussian model of the speech given the class learns one noise
variance per dimension (``--noise diagonal``); ``--noise isotropic`` is the original's plain
squared error, ``--likelihood poisson`` models the counts as Poisson counts.

Run ``python examples/original/vae_gmm_nn.py`` (original settings, the 3,000 tutorial pairs) or
small: ``python examples/original/vae_gmm_nn.py --n 300 --epochs 2 --iterations 2 --itr1 20``.
``--no-nn`` runs the VAE+GMM alone (the same seed) to see what the NN adds.
"""

import argparse
import time

import torch
from torch import nn

import serket_pyro as srk
from serket_pyro import gmm, vae
from serket_pyro import nn as srk_nn  # the original's ``import nn`` (torch.nn is ``nn`` here)
from serket_pyro.app.arguments import positive_int
from serket_pyro.app.runner import load_inputs, print_result

encoder_dim = 128
decoder_dim = 128


class Encoder(nn.Module):
    """The original's encoder: ``D - 128 (relu) - (mu, log_var)``."""

    def __init__(self, input_dim, latent_dim):
        super().__init__()
        self.fc = nn.Linear(input_dim, encoder_dim)
        self.fc_mu = nn.Linear(encoder_dim, latent_dim)
        self.fc_var = nn.Linear(encoder_dim, latent_dim)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        return self.fc_mu(h), self.fc_var(h)


class vae_model(vae.VAE):
    """The original's ``class vae_model(vae.VAE)``, its TensorFlow networks written in torch."""

    def build_encoder(self, input_dim, latent_dim):
        return Encoder(input_dim, latent_dim)

    def build_decoder(self, input_dim, latent_dim):  # logits, as the original's build_decoder
        return nn.Sequential(nn.Linear(latent_dim, decoder_dim), nn.ReLU(), nn.Linear(decoder_dim, input_dim))


class NN_model(srk_nn.NN):
    """The original's ``class NN_model(nn.NN)``: its ``model(x, y, ...)`` becomes ``build_model``."""

    def build_model(self, input_dim, output_dim):
        h_dim = 64
        return nn.Sequential(nn.Linear(input_dim, h_dim), nn.ReLU(), nn.Linear(h_dim, output_dim))


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder with serket_tutorial.npz (default: $SERKET_PYRO_DATA)")
    p.add_argument("--n", type=positive_int, default=None, help="use the first n pairs (default: all 3,000)")
    p.add_argument("--iterations", type=positive_int, default=10, help="outer iterations (original: 10)")
    p.add_argument("--epochs", type=positive_int, default=200, help="VAE epochs per update (original: 200)")
    p.add_argument("--batch-size", type=positive_int, default=500, help="VAE minibatch (original: 500)")
    p.add_argument("--latent-dim", type=positive_int, default=10, help="VAE latent dimensions (original: 10)")
    p.add_argument("--classes", type=positive_int, default=10, help="GMM classes (original: 10)")
    p.add_argument("--itr1", type=positive_int, default=500, help="NN epochs per update (original: 500)")
    p.add_argument("--itr2", type=positive_int, default=2000,
                   help="epochs of the message weights, --backward original only (original: 2000)")
    p.add_argument("--batch-size1", type=positive_int, default=500, help="NN minibatch (original: 500)")
    p.add_argument("--batch-size2", type=positive_int, default=500, help="message minibatch (original: 500)")
    p.add_argument("--backward", choices=("likelihood", "original"), default="likelihood",
                   help="the NN's message: the class likelihood (default) or the original's learned weights")
    p.add_argument("--likelihood", choices=("gaussian", "poisson"), default="gaussian",
                   help="the NN's model of the speech given the class: Gaussian (default, the original's squared "
                        "error) or Poisson counts")
    p.add_argument("--noise", choices=("diagonal", "isotropic"), default="diagonal",
                   help="Gaussian noise: one variance per dimension (default) or one for all (the original's "
                        "plain squared error)")
    p.add_argument("--no-nn", action="store_true", help="VAE+GMM alone, to compare")
    p.add_argument("--deskew", action=argparse.BooleanOptionalAction, default=False,
                   help="deskew the digits in the VAE (default off, as the original)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random choice")
    p.add_argument("--output", default=".", help="folder for the module%%03d_* output folders")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    p.add_argument("--no-progress", action="store_true", help="hide the iteration counter")
    return p


def main(args):
    torch.set_num_threads(args.threads)
    srk.reset_module_counter()
    srk.set_seed(args.seed)
    srk.set_output_root(args.output)
    images, speech, category, source = load_inputs(args.data_dir, args.n, offline_fallback=False)
    print(f"data: {len(images)} image/speech pairs from {source}")

    obs1 = srk.Observation(images)  # data1: images / 255
    obs2 = srk.Observation(speech)  # data2: HAC features of the speech
    vae1 = vae_model(args.latent_dim, itr=args.epochs, batch_size=args.batch_size, deskew=args.deskew)
    gmm1 = gmm.GMM(args.classes, category=category)
    vae1.connect(obs1)
    gmm1.connect(vae1)
    modules = [vae1, gmm1]
    if not args.no_nn:
        nn1 = NN_model(itr1=args.itr1, itr2=args.itr2, batch_size1=args.batch_size1, batch_size2=args.batch_size2,
                       backward=args.backward, likelihood=args.likelihood, noise=args.noise)
        nn1.connect(gmm1, obs2)
        modules.append(nn1)

    t0 = time.perf_counter()
    for i in range(args.iterations):
        if not args.no_progress:
            print(i)
        for m in modules:
            m.update()
    seconds = time.perf_counter() - t0
    title = "VAE+GMM" if args.no_nn else f"VAE+GMM+NN ({args.backward} message, {args.likelihood}, {args.noise} noise)"
    return print_result(title, gmm1, args.iterations, seconds)


if __name__ == "__main__":
    main(parser().parse_args())
