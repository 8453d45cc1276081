"""Write your own module: a probabilistic PCA under a GMM, on the embedded MNIST subset.

    python examples/custom_module.py                                  # learn 5 iterations, print the accuracy
    python examples/custom_module.py --checkpoint-dir ck --iterations 3
    python examples/custom_module.py --checkpoint-dir ck --iterations 5 --resume --save saved
    python examples/custom_module.py --recognise saved                # fresh process: load, recognise

:class:`PCA` implements only the hooks of the module contract (:class:`serket_pyro.Module`):
``_infer`` learns the principal subspace (learning mode only), ``_forward_message`` sends each
image's coordinates up as a Gaussian message (probabilistic PCA, Tipping and Bishop, JRSS-B 61,
1999: ``x = W z + mean + noise``, the noise variance is the mean discarded eigenvalue),
``_backward_messages`` sends nothing to the images, ``_write_outputs`` and ``_metrics`` report.
The GMM's prior on the coordinates comes back as ``backward`` and sharpens the reconstructions
(``x_hat``: the product of the PCA's Gaussian and the GMM's).  Everything else (files per
iteration, metrics, checkpoints, resuming, ``save_graph``/``load_graph``, recognition) is the
base class's.
"""

import argparse
import os
import sys

import numpy as np

import serket_pyro as srk
from serket_pyro.datasets import load_mnist_subset
from serket_pyro.messages import GaussianMessage, PointMessage


class PCA(srk.Module):
    """Probabilistic PCA: ``n_components`` coordinates per point, sent up as a Gaussian message.

    Parameters
    ----------
    n_components : int, default 20
        Dimension of the coordinates: enough for the GMM to tell digits apart, few enough to fit
        its covariances.
    name : str, default "pca"
        Short name (``module%03d_pca``).
    """

    _fitted = ("mean_", "components_", "noise_")
    input_kinds = (PointMessage,)
    test_args = {"n_components": 2}

    def __init__(self, n_components=20, name="pca"):
        super().__init__(name)
        self.n_components = n_components

    def _read_inputs(self):
        return np.asarray(self.get_observations()[0], dtype=np.float64)

    def _infer(self, x, prior):
        self.mean_ = x.mean(0)
        _, s, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        self.components_ = vt[:self.n_components]
        self.noise_ = float((s[self.n_components:] ** 2).sum() / (len(x) * max(x.shape[1] - self.n_components, 1)))

    def _forward_message(self, x, prior):
        self.z_ = GaussianMessage((x - self.mean_) @ self.components_.T, max(self.noise_, 1e-12) ** 0.5)
        return self.z_

    def _backward_messages(self, x, prior):
        return [None]  # the images need nothing back

    def _write_outputs(self, writer, x, prior):
        z = self.z_ if prior is None else self.z_ * prior  # the GMM's prior sharpens the coordinates
        writer.savetxt(f"z_{self.mode}.txt", self.z_)
        writer.savetxt(f"x_hat_{self.mode}.txt", np.asarray(z) @ self.components_ + self.mean_, fmt="%.4g")

    def _metrics(self, x, prior):
        residual = x - self.mean_ - np.asarray(self.z_) @ self.components_
        return {"objective": -0.5 * float((residual ** 2).sum()) / max(self.noise_, 1e-12) / len(x)}


def build(images, category, args):
    """images -> PCA -> GMM (the classes)."""
    obs = srk.Observation(images)
    pca = PCA(args.components)
    pca.connect(obs)
    gmm = srk.GMM(10, itr=args.itr, category=category)
    gmm.connect(pca)
    return srk.System("pca_gmm", {"obs": obs, "pca": pca, "gmm": gmm}, result="gmm")


def main(args):
    d = load_mnist_subset()
    images, category = d.images[: args.n] / 255.0, d.category[: args.n]
    srk.set_output_root(args.output)
    if args.recognise:
        # classes saved from a script are recorded under the script's module name (custom_module.PCA)
        system = srk.load_graph(args.recognise, {"obs": images}, mode="recog", category=category,
                                allowed_packages=["custom_module"])
        system.fit(n_iter=1, seed=args.seed, progress=False)
    else:
        system = build(images, category, args)
        system.fit(n_iter=args.iterations, seed=args.seed, progress=False,
                   checkpoint_dir=args.checkpoint_dir, resume=args.resume)
        if args.save:
            srk.save_graph(args.save, system)
    acc = system.result_module.metrics_["accuracy"]
    print(f"GMM accuracy ({'recognition' if args.recognise else 'learning'}): {acc:.3f}")
    return acc


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3000, help="first n images of the embedded MNIST subset")
    p.add_argument("--components", type=int, default=20)
    p.add_argument("--itr", type=int, default=50, help="GMM Gibbs sweeps per update")
    p.add_argument("--iterations", type=int, default=5, help="outer iterations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=os.path.join("runs", "custom_module"))
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--save", default=None, help="save the learned graph to this folder")
    p.add_argument("--recognise", default=None, metavar="FOLDER", help="load a saved graph and recognise")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
