"""VAE+GMM (and VAE+GMM+MM) fitted jointly as ONE Pyro program (VaDE-style), then handed back to
the modules.

    python examples/joint_vae_gmm.py                         # 3,000 tutorial images
    python examples/joint_vae_gmm.py --mm --init modules --epochs 50   # message passing first, then joint
    python examples/joint_vae_gmm.py --neighbour-weight 0    # VaDE's autoencoder pretraining
    python examples/joint_vae_gmm.py --n 300 --pretrain-epochs 2 --epochs 2    # a quick try

Default start (``--init gmm``): VaDE's networks (784-500-500-2000-10) pretrained as an autoencoder
with a neighbour-embedding term (serket_pyro.joint.neighbour_embedding: graph neighbours of the deskewed
images stay close in z), a GMM module on the latents (covariance prior set by the latents' local
scale), then the joint objective with full class covariances.  ``--init modules`` runs the
message-passing system of the tutorial (its VAE, ``--iterations`` outer iterations) and starts
from its networks, GMM and Markov model instead.
"""

import argparse
import logging

from serket_pyro.app.arguments import add_joint_arguments
from serket_pyro.app.joint_run import run_joint


def main(args):
    result = run_joint(args)  # the recipe lives in the package: `serket-pyro joint` runs it too
    print("\n".join(result["lines"]))
    return result


def parser():
    return add_joint_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # --progress: epoch lines
    main(parser().parse_args())
