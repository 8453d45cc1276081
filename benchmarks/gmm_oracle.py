"""Is VAE+GMM limited by the GMM's search or by the VAE's latent space?

Trains the tutorial VAE (18 latents, 200 epochs, batch 500) once on the 3,000 tutorial images, runs
the tutorial GMM(10) on its latents with several seeds, and prints for each run the accuracy and
the exact collapsed log joint ``log p(z_latent, classes)`` (weights, means and covariances
integrated out, :func:`serket_pyro.modules.gmm._log_collapsed_joint`) of the partition the GMM found, next
to that of the true digit labels.  If the true partition is *less* probable than what the GMM
finds, no better sampler, restart rule or split-merge move on the GMM can raise the accuracy: the
latent space or the model must change.  Each GMM prior given (``--priors``: the module's default,
an informative covariance prior, and the original's weak one) is scored under its own prior.

Usage::

    python benchmarks/gmm_oracle.py                 # VAE seed 0, GMM seeds 0-3, 1 thread
    python benchmarks/gmm_oracle.py --vae-seed 1 --gmm-seeds 0 1
    python benchmarks/gmm_oracle.py --deskew         # on deskewed images (VAE(deskew=True))
    python benchmarks/gmm_oracle.py --priors original  # the original's weak covariance prior only
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch

import serket_pyro as srk
from serket_pyro.datasets import load_tutorial
from serket_pyro.modules.gmm import GMM, _log_collapsed_joint, _suff_stats
from serket_pyro.metrics import accuracy
from serket_pyro.modules.vae import VAE


def collapsed_joint(gmm: GMM, x: torch.Tensor, labels) -> float:
    """Exact ``log p(x, labels)`` under ``gmm``'s prior (nats)."""
    prior = gmm._prior(x)
    xc = x - prior.loc
    xx = (xc.unsqueeze(-1) * xc.unsqueeze(-2)).reshape(x.shape[0], -1)
    z = torch.as_tensor(labels, dtype=torch.long)
    return _log_collapsed_joint(prior, gmm.alpha, _suff_stats(xc, xx, z, gmm.K), z)


#: GMM covariance priors compared: the module's default and the original's weak prior
PRIORS = {"default": {}, "original": {"nu0": 18 + 2.0, "psi0": 0.1, "prior_scale": "absolute"}}


def main(args):
    torch.set_num_threads(args.threads)
    d = load_tutorial(args.data_dir or os.environ.get("SERKET_PYRO_DATA"))
    y = d.category
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        srk.set_output_root(tmp)
        srk.set_seed(args.vae_seed)
        obs = srk.Observation(d.images)
        vae = VAE(18, itr=args.epochs, batch_size=500, deskew=args.deskew)
        vae.connect(obs)
        vae.update()
        z = vae.forward_msg.loc.detach().to(torch.float64)
        for prior in args.priors:
            for seed in args.gmm_seeds:
                srk.set_seed(seed)
                gmm = GMM(10, category=y, **PRIORS[prior])
                gmm.connect(srk.Observation(z.numpy()))
                gmm.update()
                found = gmm.assignments_.cpu().numpy()
                lj, truth = collapsed_joint(gmm, z, found), collapsed_joint(gmm, z, y)
                rows.append((prior, seed, accuracy(y, found), lj, truth))
    print(f"VAE seed {args.vae_seed}, {args.epochs} epochs{', deskewed images' if args.deskew else ''}")
    print("| GMM prior | GMM seed | accuracy | collapsed log joint of the GMM's partition (nats) "
          "| of the true digit labels | difference |")
    print("|---|---|---|---|---|---|")
    for prior, seed, acc, lj, truth in rows:
        print(f"| {prior} | {seed} | {acc:.3f} | {lj:.0f} | {truth:.0f} | {lj - truth:+.0f} |")
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vae-seed", type=int, default=0)
    p.add_argument("--gmm-seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--deskew", action="store_true", help="VAE(deskew=True): deskewed images")
    p.add_argument("--priors", nargs="+", default=["default", "original"], choices=list(PRIORS),
                   help="GMM covariance priors: the module's default and/or the original's")
    main(p.parse_args())
