"""The command line's arguments that need no heavy import: ``serket-pyro --help`` builds its parser
from here without importing torch, pyro or numpy (the commands import :mod:`.runner` when they
run).  :mod:`.runner` re-exports these names, so scripts keep ``from serket_pyro.app.runner
import add_tutorial_arguments``."""

from __future__ import annotations

import argparse

__all__ = ["SYSTEMS", "add_joint_arguments", "add_tutorial_arguments", "positive_int"]

#: tutorial systems: name -> (models module, needs speech)
SYSTEMS = {
    "vae_gmm": ("serket_pyro.models.vae_gmm", False),
    "vae_gmm_mm": ("serket_pyro.models.vae_gmm_mm", False),
    "vae_gmm_mlda": ("serket_pyro.models.vae_gmm_mlda", True),
    "vae_gmm_mlda_mm": ("serket_pyro.models.vae_gmm_mlda_mm", True),
}


def positive_int(text: str) -> int:
    """``argparse`` type of a count flag: an integer >= 1 (argparse exits 2 with a message otherwise).

    Parameters
    ----------
    text : str
        The flag's value as typed.

    Returns
    -------
    int
        The value.

    Raises
    ------
    argparse.ArgumentTypeError
        ``text`` is not an integer >= 1 (``--n -5`` would otherwise silently drop points).
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def add_tutorial_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags with defaults equal to the Serket tutorials' settings."""
    parser.add_argument("--data-dir", default=None,
                        help="folder holding serket_tutorial.npz (default: $SERKET_PYRO_DATA, then the user cache; "
                             "without either, the embedded MNIST subset)")
    parser.add_argument("--n", "--n-points", type=positive_int, default=None,
                        help="use only the first N data points (default: all 3000); --n-points under torchrun, "
                             "which takes --n for its own --nnodes")
    parser.add_argument("--iterations", type=positive_int, default=5, help="outer iterations (tutorial: 5)")
    parser.add_argument("--epochs", type=positive_int, default=200, help="VAE epochs per update (tutorial: 200)")
    parser.add_argument("--batch-size", type=positive_int, default=500, help="VAE minibatch size (tutorial: 500)")
    parser.add_argument("--latent-dim", type=positive_int, default=18, help="VAE latent dimensions (tutorial: 18)")
    parser.add_argument("--classes", type=positive_int, default=10, help="GMM / MLDA classes (tutorial: 10)")
    parser.add_argument("--deskew", action=argparse.BooleanOptionalAction, default=True,
                        help="the VAE deskews the images first (VAE(deskew=True), default; "
                             "--no-deskew: raw pixels as the tutorial)")
    parser.add_argument("--seed", type=int, default=0, help="seed for every random choice")
    parser.add_argument("--output", default=".", help="folder for the module%%03d_* output folders (default: .)")
    parser.add_argument("--checkpoint-dir", default=None, help="write a checkpoint after every outer iteration")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch CPU threads (1 is fastest on 2 shared cores)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def add_joint_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of the joint recipe (``serket-pyro joint``, ``examples/joint_vae_gmm.py``): VaDE's
    settings (networks 784-500-500-2000-10, 150 pretraining epochs, batch 128)."""
    parser.add_argument("--mm", action="store_true", help="VAE+GMM+MM: the Markov model over the image sequence")
    parser.add_argument("--n", "--n-points", dest="n", type=positive_int, default=None,
                        help="first n images only (--n-points under torchrun, whose own flags --n... make --n "
                             "ambiguous)")
    parser.add_argument("--init", default="gmm", choices=["gmm", "kmeans", "modules"],
                        help="gmm/kmeans: pretrain the networks, then a GMM module / k-means on the latents; "
                             "modules: run the message-passing system (--iterations outer iterations) and start "
                             "from it")
    parser.add_argument("--iterations", type=positive_int, default=5,
                        help="message-passing iterations (--init modules)")
    parser.add_argument("--latent-dim", type=positive_int, default=10)
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--pretrain-epochs", type=int, default=150)
    parser.add_argument("--neighbour-weight", type=float, default=10.0,
                        help="weight of the neighbour-embedding term in pretraining (0: a plain autoencoder)")
    parser.add_argument("--neighbours", type=positive_int, default=10, help="k of the k-nearest-neighbour graph")
    parser.add_argument("--gmm-prior", default="neighbours", choices=["neighbours", "module"],
                        help="covariance prior of the GMM start (--init gmm): set by the latents' local scale, "
                             "or the GMM module's")
    parser.add_argument("--epochs", type=positive_int, default=20, help="joint epochs")
    parser.add_argument("--covariance", default=None, choices=["full", "diag"],
                        help="class covariances in the joint model; default full after pretraining, diag with "
                             "--init modules")
    parser.add_argument("--chunk-len", type=positive_int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--data-dir", default=None,
                        help="folder with serket_tutorial.npz (default: $SERKET_PYRO_DATA, the user cache, a "
                             "download)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--progress", action="store_true", help="a line per epoch")
    parser.add_argument("--output", default="output_joint")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over the processes torchrun starts (torchrun --nproc_per_node N -m "
                             "serket_pyro joint ... --distributed): each process holds only its block of the images "
                             "(and their guide), rank 0 prints and writes the files; with --init gmm or kmeans; in "
                             "one process an ordinary run")
    return parser
