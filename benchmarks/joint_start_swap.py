"""Which decides the full-MNIST joint result: the start (pretraining + class start) or the code
of the joint epochs?  Swap the starts between two versions of ``JointModel``.

``pretrain`` runs the full-MNIST recipe of ``benchmarks/joint.py`` (VaDE networks, 20 epochs of
neighbour-embedding pretraining, GMM class start) and saves the start: the networks' state and
the class weights, means and standard deviations (diagonal).  ``joint`` loads a start into a
``JointModel`` of the code on the path, seeds, and runs the joint epochs, printing the accuracy
after each.  The code on ``PYTHONPATH`` decides the version: the compiled program (this tree) or
the old hand-written ``JointModel`` (commit ``9b2d555^``, detected by its ``log_scales``)::

    git worktree add --detach ../old 9b2d555^
    python benchmarks/joint_start_swap.py pretrain --seed 0 --out start_new.pt
    PYTHONPATH=../old python benchmarks/joint_start_swap.py pretrain --seed 0 --out start_old.pt
    python benchmarks/joint_start_swap.py joint --start start_old.pt          # and the other 3

``joint --init-classes`` keeps the saved networks and starts the classes anew with the code's
GMM start (separates the pretraining from the class start).  ``--n-points`` takes the first
images only (tests).
"""

import argparse
import json
import logging
import resource
import tempfile
import time

import numpy as np
import pyro
import torch

import serket_pyro as srk
from serket_pyro.datasets import load_mnist
from serket_pyro.joint import joint_model
from serket_pyro.metrics import accuracy
from serket_pyro.models import vae_gmm
from serket_pyro.modules.vae import mlp_networks


def build(x, y, seed, output_root, latent_dim=10):
    """``JointModel`` of VAE (VaDE networks, deskewed) -> GMM on 8-bit images ``x``, as
    ``benchmarks/joint.py`` builds it.  Written out here rather than imported from there: this
    script also runs against the old ``JointModel`` (commit ``9b2d555^``), whose ``joint_model``
    takes none of the options (``entropy``) that ``benchmarks/joint.py`` now passes."""
    srk.reset_module_counter()
    pyro.set_rng_seed(seed)
    system = vae_gmm.build(x[:2], y[:2], latent_dim=latent_dim, batch_size=256, n_classes=10, deskew=True,
                           output_root=output_root)
    system["gmm"].category = None
    system["vae"].encoder, system["vae"].decoder = mlp_networks(x.shape[1], latent_dim)
    return joint_model(system, x=torch.from_numpy(x), chunk_len=100, covariance="diag")


def _old(jm) -> bool:
    return hasattr(jm, "log_scales")  # the hand-written JointModel before the compiled program


def _networks(jm):
    return (jm.encoder, jm.decoder) if _old(jm) else (jm.vae.encoder_, jm.vae.decoder_)


def get_start(jm) -> dict:
    """Networks' state dicts, class ``w (K,)``, ``m (K, L)``, ``s (K, L)`` (standard deviations)."""
    enc, dec = _networks(jm)
    if _old(jm):
        w, m = jm.weight_logits.detach().double().softmax(-1), jm.means.detach().double()
        s = jm.log_scales.detach().double().exp()
    else:
        p = jm.params()
        w, m = p["weights"].detach().double(), p["means"].detach().double()
        s = p["scale_tril"].detach().double().diagonal(dim1=-2, dim2=-1)
    return {"enc": enc.state_dict(), "dec": dec.state_dict(), "w": w, "m": m, "s": s}


@torch.no_grad()
def set_start(jm, st: dict) -> None:
    enc, dec = _networks(jm)
    enc.load_state_dict(st["enc"])
    dec.load_state_dict(st["dec"])
    if _old(jm):
        jm.weight_logits.copy_(st["w"].log().float())
        jm.means.copy_(st["m"].float())
        jm.log_scales.copy_(st["s"].log().float())
    else:
        jm.set_gaussians(st["m"], torch.diag_embed(st["s"] ** 2), st["w"])


def main(args):
    if (args.step == "pretrain") != (args.out is not None) or (args.step == "joint") != (args.start is not None):
        raise SystemExit("joint_start_swap: pretrain takes --out, joint takes --start")
    torch.set_num_threads(args.threads)
    tr = load_mnist("train", root=args.data_dir)
    x, y = tr.images, tr.labels
    if not args.n_points or args.n_points > len(x):  # all 70,000: the test images follow
        te = load_mnist("test", root=args.data_dir)
        x, y = np.concatenate([x, te.images]), np.concatenate([y, te.labels])
    if args.n_points:
        x, y = x[:args.n_points].copy(), y[:args.n_points].copy()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        jm = build(x, y, args.seed, tmp)
        code = "old JointModel" if _old(jm) else "compiled program"
        if args.step == "pretrain":
            jm.fit(0, pretrain_epochs=args.pretrain_epochs, pretrain_kl_weight=0, pretrain_neighbour_weight=10,
                   n_neighbours=10, init="gmm", lr=1e-3)
            acc = float(accuracy(y, jm.predict().argmax(-1).cpu().numpy()))
            torch.save(get_start(jm), args.out)
            print(f"pretrain ({code}) seed {args.seed}: start accuracy {acc:.4f}, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            return {"step": "pretrain", "code": code, "seed": args.seed, "start_accuracy": acc}
        set_start(jm, torch.load(args.start, weights_only=True))
        pyro.set_rng_seed(args.seed)
        if args.init_classes:  # the saved networks, this code's class start (GMM module on the latents)
            jm.init_clusters("gmm")
        acc0 = float(accuracy(y, jm.predict().argmax(-1).cpu().numpy()))
        jm.fit(args.epochs, init=None, lr=1e-3, category=y, eval_every=1, progress=args.progress)
    rec = {"step": "joint", "code": code, "start": args.start, "seed": args.seed, "start_accuracy": acc0,
           "init_classes": args.init_classes,
           "accuracy_history": jm.accuracy_history_, "loss_history": jm.loss_history_,
           "seconds": time.perf_counter() - t0,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(f"joint ({code}) from {args.start}{' (classes anew)' if args.init_classes else ''}, seed {args.seed}: "
          f"{acc0:.4f} -> "
          + " ".join(f"{a:.4f}" for a in rec["accuracy_history"])
          + f"; loss {rec['loss_history'][-1]:.3f}; {rec['seconds']:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rec, f, indent=1)
    return rec


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["pretrain", "joint"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="pretrain: file the start is saved to")
    p.add_argument("--start", help="joint: a start saved by pretrain")
    p.add_argument("--pretrain-epochs", type=int, default=20)
    p.add_argument("--epochs", type=int, default=10, help="joint epochs")
    p.add_argument("--init-classes", action="store_true",
                   help="joint: start the classes anew with this code's GMM start (the saved networks kept)")
    p.add_argument("--n-points", type=int, default=None, help="first images only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", default=None)
    return p


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(parser().parse_args())
