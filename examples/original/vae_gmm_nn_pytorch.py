"""The original Serket's PyTorch VAE+GMM+NN example (``examples/VAE+GMM+NN/VAE+GMM+NN_pytorch.py``).

The 2023 form of :mod:`vae_gmm_nn`: the VAE is a ``torch_vae.TorchVAE`` subclass and the network
a ``torch_nn.TorchNN`` subclass, written as the original (``build_encoder`` gets the input shape,
the decoder and the NN end in a sigmoid), with the original's settings as the defaults
(``TorchVAE(784, 10, device="cpu", epoch=200, batch_size=500)``, ``GMM(10)``,
``NN_model(itr1=500, itr2=2000, batch_size1=500, batch_size2=500)``, 10 outer iterations).

Run ``python examples/original/vae_gmm_nn_pytorch.py`` or small:
``python examples/original/vae_gmm_nn_pytorch.py --n 300 --epochs 2 --iterations 2 --itr1 20``.
"""

import argparse
import time

import torch
import torch.nn as nn

import serket_pyro as srk
from serket_pyro import gmm, torch_nn, torch_vae
from serket_pyro.app.arguments import positive_int
from serket_pyro.app.runner import load_inputs, print_result

encoder_dim = 128
decoder_dim = 128


class vae_model(torch_vae.TorchVAE):
    """The original's networks: ``input_dim`` is the data's shape ``(784,)``."""

    def build_encoder(self, input_dim, latent_dim):
        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(input_dim[0], encoder_dim)
                self.fc_mu = nn.Linear(encoder_dim, latent_dim)
                self.fc_var = nn.Linear(encoder_dim, latent_dim)

            def forward(self, x):
                h = torch.relu(self.fc(x))
                return self.fc_mu(h), self.fc_var(h)  # mu, log_var

        return Encoder()

    def build_decoder(self, input_dim, latent_dim):
        return nn.Sequential(nn.Linear(latent_dim, decoder_dim), nn.ReLU(), nn.Linear(decoder_dim, input_dim[0]),
                             nn.Sigmoid())


class NN_model(torch_nn.TorchNN):
    def build_model(self, input_dim, output_dim):
        h_dim = 64
        return nn.Sequential(nn.Linear(input_dim, h_dim), nn.ReLU(), nn.Linear(h_dim, output_dim), nn.Sigmoid())


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
    p.add_argument("--itr2", type=positive_int, default=2000, help="message epochs (original: 2000)")
    p.add_argument("--batch-size1", type=positive_int, default=500, help="NN minibatch (original: 500)")
    p.add_argument("--batch-size2", type=positive_int, default=500, help="message minibatch (original: 500)")
    p.add_argument("--device", default="cpu", help="torch device (original: cpu)")
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

    obs1 = srk.Observation(images)
    obs2 = srk.Observation(speech)
    vae1 = vae_model(images.shape[1], args.latent_dim, device=args.device, epoch=args.epochs,
                     batch_size=args.batch_size)
    gmm1 = gmm.GMM(args.classes, category=category, device=args.device)
    nn1 = NN_model(itr1=args.itr1, itr2=args.itr2, batch_size1=args.batch_size1, batch_size2=args.batch_size2,
                   device=args.device)
    vae1.connect(obs1)
    gmm1.connect(vae1)
    nn1.connect(gmm1, obs2)

    t0 = time.perf_counter()
    for i in range(args.iterations):
        if not args.no_progress:
            print(i)
        vae1.update()
        gmm1.update()
        nn1.update()
    seconds = time.perf_counter() - t0
    return print_result("VAE+GMM+NN (PyTorch form)", gmm1, args.iterations, seconds)


if __name__ == "__main__":
    main(parser().parse_args())
