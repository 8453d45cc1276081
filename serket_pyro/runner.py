"""What the example scripts and the ``serket-pyro run`` command share: the tutorial's argument
defaults, loading the tutorial data (offline fallback: the embedded MNIST subset), running a
system with a progress bar, and the final one-screen summary."""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from . import datasets
from .output import set_output_root
from .seed import set_seed

__all__ = ["SYSTEMS", "add_tutorial_arguments", "load_inputs", "build_system", "run_system", "format_summary"]

#: tutorial systems: name -> (models module, needs speech)
SYSTEMS = {
    "vae_gmm": ("serket_pyro.models.vae_gmm", False),
    "vae_gmm_mm": ("serket_pyro.models.vae_gmm_mm", False),
    "vae_gmm_mlda": ("serket_pyro.models.vae_gmm_mlda", True),
    "vae_gmm_mlda_mm": ("serket_pyro.models.vae_gmm_mlda_mm", True),
}


def add_tutorial_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags with defaults equal to the Serket tutorials' settings."""
    parser.add_argument("--data-dir", default=None,
                        help="folder holding serket_tutorial.npz (default: $SERKET_PYRO_DATA, then the user cache)")
    parser.add_argument("--n", type=int, default=None, help="use only the first N data points (default: all 3000)")
    parser.add_argument("--iterations", type=int, default=5, help="outer iterations (tutorial: 5)")
    parser.add_argument("--epochs", type=int, default=200, help="VAE epochs per update (tutorial: 200)")
    parser.add_argument("--batch-size", type=int, default=500, help="VAE minibatch size (tutorial: 500)")
    parser.add_argument("--latent-dim", type=int, default=18, help="VAE latent dimensions (tutorial: 18)")
    parser.add_argument("--classes", type=int, default=10, help="GMM / MLDA classes (tutorial: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed for every random choice")
    parser.add_argument("--output", default=".", help="folder for the module%%03d_* output folders (default: .)")
    parser.add_argument("--checkpoint-dir", default=None, help="write a checkpoint after every outer iteration")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on 2 shared cores)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def load_inputs(data_dir=None, n=None, offline_fallback=True):
    """Tutorial data: ``images (N, 784)`` in [0, 1], ``speech (N, 2400)`` counts or ``None``,
    ``category (N,)``, and a description of the source.

    Looks for ``serket_tutorial.npz`` (see :mod:`serket_pyro.datasets`); without it and without
    network, falls back to the embedded 3,000-image MNIST subset (images only, same cyclic order).
    """
    try:
        d = datasets.load_tutorial(root=data_dir)
        images, speech, category, source = d.images, d.hac, d.category, "serket_tutorial.npz"
    except (FileNotFoundError, OSError) as e:
        if not offline_fallback:
            raise
        s = datasets.load_mnist_subset()
        images, speech, category = s.images, None, s.category
        source = f"embedded MNIST subset (serket_tutorial.npz unavailable: {str(e).splitlines()[0]})"
    images = np.asarray(images, dtype=np.float32)
    if images.max() > 1.0:
        images = images / 255.0
    if n is not None:
        images, category = images[:n], category[:n]
        speech = None if speech is None else speech[:n]
    return images, speech, np.asarray(category), source


def build_system(name: str, images, speech, category, args):
    import importlib

    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; choose one of {', '.join(SYSTEMS)}")
    mod_name, needs_speech = SYSTEMS[name]
    build = importlib.import_module(mod_name).build
    kw = dict(latent_dim=args.latent_dim, epochs=args.epochs, batch_size=args.batch_size,
              n_classes=args.classes, device=args.device)
    if needs_speech:
        if speech is None:
            raise ValueError(f"{name} needs the speech modality from serket_tutorial.npz, which was not found; "
                             "set SERKET_PYRO_DATA or pass --data-dir")
        return build(images, speech, category, **kw)
    return build(images, category, **kw)


def run_system(name: str, args) -> tuple:
    """Build and fit a tutorial system from parsed arguments; returns ``(system, seconds, source)``."""
    torch.set_num_threads(args.threads)
    set_output_root(args.output)
    set_seed(args.seed)
    images, speech, category, source = load_inputs(args.data_dir, args.n)
    system = build_system(name, images, speech, category, args)
    t0 = time.perf_counter()
    system.fit(n_iter=args.iterations, seed=args.seed, progress=not args.no_progress,
               checkpoint_dir=args.checkpoint_dir)
    return system, time.perf_counter() - t0, source


def format_summary(system, seconds: float, source: str) -> str:
    """One screen: each module's scores and folder, the result module first."""
    lines = [f"{system.name}: {len(system.history)} outer iterations in {seconds:.1f} s on {source}"]
    head = f"{'module':<22}{'accuracy':>10}{'greedy':>9}{'ARI':>8}{'NMI':>8}  folder"
    lines.append(head)
    lines.append("-" * len(head))
    summ = system.summary()
    keys = [system.result] + [k for k in summ if k != system.result]
    for k in keys:
        s = summ[k]
        if "accuracy" in s:
            lines.append(f"{s['name']:<22}{s['accuracy']:>10.3f}{s['greedy_accuracy']:>9.3f}{s['ari']:>8.3f}"
                         f"{s['nmi']:>8.3f}  {os.path.relpath(s['folder'])}")
        else:
            lines.append(f"{s['name']:<22}{'':>35}  {os.path.relpath(s['folder'])}")
    r = summ[system.result]
    if "accuracy" in r:
        lines.append(f"result ({r['name']}): accuracy {r['accuracy']:.3f} "
                     f"(original's greedy metric {r['greedy_accuracy']:.3f}), class_learn.txt and acc_learn.txt "
                     f"in {os.path.relpath(r['folder'])}")
    return "\n".join(lines)
