"""Joint mode (one Pyro program, VaDE-style) next to message passing, same data and seeds.

    python benchmarks/joint.py --system vae_gmm                  # 3,000 tutorial images
    python benchmarks/joint.py --system vae_gmm_mm               # tutorial images as a cyclic sequence
    python benchmarks/joint.py --system vae_gmm --data mnist     # full MNIST, 70,000 images
    python benchmarks/joint.py --system vae_gmm --data mnist --n 10000 --epochs 20 --skip-mp
    python benchmarks/joint.py --system vae_gmm --no-deskew      # raw pixels (default: VAE(deskew=True))
    python benchmarks/joint.py --data mnist --arch vade --latent-dim 10 --batch-size 256 \
        --pretrain-epochs 20 --pretrain-kl-weight 0 --pretrain-neighbour-weight 10 --neighbours 10 \
        --init gmm --epochs 10 --skip-mp                          # neighbour-embedding pretraining

Prints accuracy (Hungarian, :func:`serket_pyro.metrics.accuracy`), seconds and peak resident
memory for the joint fit and (unless ``--skip-mp``) for the message-passing system of
``serket_pyro.models`` with the same data and seed.  MNIST images stay uint8 in memory (scaled per
minibatch) so the joint fit's memory is flat in N apart from 784 bytes per image.
"""

import argparse
import logging
import json
import resource
import tempfile
import time

import numpy as np
import pyro
import torch

import serket_pyro as srk
from serket_pyro.datasets import load_mnist, load_tutorial
from serket_pyro.joint import joint_model
from serket_pyro.metrics import accuracy
from serket_pyro.models import vae_gmm, vae_gmm_mm
from serket_pyro.modules.vae import mlp_networks


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(args):
    root = args.data_dir  # None: the loaders' search order ($SERKET_PYRO_DATA, the cache, a download)
    if args.data == "tutorial":
        d = load_tutorial(root)
        x, y = (d.images * 255).round().astype(np.uint8), d.category
    else:
        tr, te = load_mnist("train", root=root), load_mnist("test", root=root)
        x, y = np.concatenate([tr.images, te.images]), np.concatenate([tr.labels, te.labels])
    if args.n:
        x, y = x[:args.n], y[:args.n]
    return x, y


def message_passing(args, x, y, seed, output_root):
    """The tutorial system of ``args.system`` fitted by message passing (``args.mp_iterations``)."""
    build = vae_gmm.build if args.system == "vae_gmm" else vae_gmm_mm.build
    srk.set_seed(seed)
    system = build(x.astype(np.float64) / 255.0, y, latent_dim=args.latent_dim, epochs=args.mp_epochs,
                   batch_size=args.batch_size, n_classes=args.classes, deskew=args.deskew, device=args.device,
                   output_root=output_root)
    system.fit(n_iter=args.mp_iterations, seed=seed, progress=False)
    return system


def run_joint(args, x, y, seed):
    srk.reset_module_counter()
    pyro.set_rng_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.init == "modules":
            # message passing as pre-training, then the joint objective from its VAE networks, GMM
            # and Markov model (timed together)
            system = message_passing(args, x, y, seed, tmp)
            mp_acc, pretrain = system["gmm"].metrics_["accuracy"], 0
        else:
            # the modules only carry hyperparameters here; data go straight to the joint model (uint8)
            build = vae_gmm.build if args.system == "vae_gmm" else vae_gmm_mm.build
            system = build(x[:2], y[:2], latent_dim=args.latent_dim, batch_size=args.batch_size,
                           n_classes=args.classes, deskew=args.deskew, device=args.device, output_root=tmp)
            system["gmm"].category = None
            if args.arch == "vade":  # VaDE's D-500-500-2000-L networks (Jiang et al. 2017)
                system["vae"].encoder, system["vae"].decoder = mlp_networks(x.shape[1], args.latent_dim)
            mp_acc, pretrain = None, args.pretrain_epochs
        jm = joint_model(system, x=torch.from_numpy(x), chunk_len=args.chunk_len, covariance=args.covariance,
                         entropy=args.entropy,
                         device=args.device)
        jm.fit(args.epochs, pretrain_epochs=pretrain, pretrain_kl_weight=args.pretrain_kl_weight,
               pretrain_neighbour_weight=args.pretrain_neighbour_weight, n_neighbours=args.neighbours,
               gmm_prior=args.gmm_prior,
               init=args.init, lr=args.lr,
               lr_global=args.lr_global, category=y, eval_every=args.eval_every, progress=args.progress)
        secs = time.perf_counter() - t0
        pred = jm.predict().argmax(-1).cpu().numpy()
        nb = jm.neighbours_  # share of k-NN graph edges joining images of the same digit
        purity = None if nb is None else float((y[nb.numpy()] == y[:, None]).mean())
    return {"method": "joint" + (" from message passing" if mp_acc is not None else ""), "seed": seed,
            "accuracy": float(accuracy(y, pred)), "seconds": secs, "message_passing_accuracy": mp_acc,
            "accuracy_history": jm.accuracy_history_, "init_accuracy": jm.init_accuracy_, "graph_purity": purity,
            "peak_rss_mb": peak_mb()}


def run_mp(args, x, y, seed):
    srk.reset_module_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        system = message_passing(args, x, y, seed, tmp)
        secs = time.perf_counter() - t0
        acc = system["gmm"].metrics_["accuracy"]
    return {"method": "message passing", "seed": seed, "accuracy": float(acc), "seconds": secs,
            "peak_rss_mb": peak_mb()}


def main(args):
    torch.set_num_threads(args.threads)
    x, y = load(args)
    records = []
    for seed in args.seeds:
        runs = ([] if args.skip_joint else [run_joint]) + ([] if args.skip_mp else [run_mp])
        for fn in runs:
            r = fn(args, x, y, seed)
            records.append(r)
            print(f"{args.system} {args.data} N={len(x)} {r['method']} seed {seed}: accuracy {r['accuracy']:.4f}, "
                  f"{r['seconds']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return records


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # --progress: epoch lines
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", default="vae_gmm", choices=["vae_gmm", "vae_gmm_mm"])
    p.add_argument("--data", default="tutorial", choices=["tutorial", "mnist"])
    p.add_argument("--n", type=int, default=None, help="first n images only")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--latent-dim", type=int, default=18)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--pretrain-epochs", type=int, default=200)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--arch", default="tutorial", choices=["tutorial", "vade"],
                   help="the VAE module's 784-128-L networks or VaDE's 784-500-500-2000-L")
    p.add_argument("--pretrain-kl-weight", type=float, default=1.0, help="0: autoencoder pretraining (VaDE)")
    p.add_argument("--pretrain-neighbour-weight", type=float, default=0.0,
                   help="> 0: neighbour-embedding pretraining (serket_pyro.joint.neighbour_embedding); 0: VaDE's")
    p.add_argument("--neighbours", type=int, default=10, help="k of the k-nearest-neighbour graph")
    p.add_argument("--entropy", default="analytic", choices=["analytic", "sampled"],
                   help="q(z|x)'s entropy in the ELBO: closed form or the drawn -log q")
    p.add_argument("--covariance", default="diag", choices=["full", "diag"], help="class covariances of the joint GMM")
    p.add_argument("--gmm-prior", default="module", choices=["module", "neighbours"],
                   help="covariance prior of the --init gmm start (JointModel.init_clusters)")
    p.add_argument("--init", default="kmeans", choices=["kmeans", "gmm", "modules"],
                   help="modules: run the message-passing system first and start the joint fit from it")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-global", type=float, default=None)
    p.add_argument("--chunk-len", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--mp-epochs", type=int, default=200)
    p.add_argument("--mp-iterations", type=int, default=5)
    p.add_argument("--skip-mp", action="store_true")
    p.add_argument("--skip-joint", action="store_true", help="message passing only")
    p.add_argument("--deskew", action=argparse.BooleanOptionalAction, default=True,
                   help="VAE(deskew=True), default: deskewed images in the joint fit and in message passing; "
                        "--no-deskew: raw pixels")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=None,
                   help="folder with the data files (default: $SERKET_PYRO_DATA, the user cache, a download)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", default=None)
    main(p.parse_args())
