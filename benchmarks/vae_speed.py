"""Speed of the VAE's training step: Pyro SVI + Trace_ELBO against the hand-written analytic ELBO.

Trains ``serket_pyro.modules.vae.VAE(18, batch_size=500)`` on the 3,000 tutorial images, one thread, and
prints per-epoch wall time (median over the timed epochs, after warm-up) for each path, the time
per optimisation step and the projected time of the tutorial's 5 outer iterations x 200 epochs.
It also times the rest of one ``update()`` (posterior of all points, messages and files).

    python benchmarks/vae_speed.py                 # defaults: 3 warm-up + 10 timed epochs
    python benchmarks/vae_speed.py --epochs 20 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import pyro
import torch

import serket_pyro as srk
from serket_pyro.datasets import load_tutorial
from serket_pyro import vae


def _load_images(n: int | None) -> np.ndarray:
    images = (load_tutorial().images * 255).round().astype(np.uint8)  # $SERKET_PYRO_DATA, cache, download
    return images if n is None else images[:n]


def time_path(images: np.ndarray, elbo: str, warmup: int, epochs: int, batch_size: int, seed: int,
              out: str) -> dict:
    """Epoch times of one path: ``warmup`` untimed epochs then ``epochs`` timed ones."""
    srk.reset_module_counter()
    pyro.set_rng_seed(seed)
    obs = srk.Observation(images)
    model = vae.VAE(18, itr=warmup, batch_size=batch_size, elbo=elbo, output_root=out)
    model.connect(obs)
    model.update()  # builds the networks, warm-up epochs, messages and files
    x, _ = model._data()
    train = model._train_analytic if elbo == "analytic" else model._train_pyro
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        train(x, None, None, range(1))
        times.append(time.perf_counter() - t0)
    # the rest of an update: posterior of all points, messages, files (itr=1 epoch subtracted)
    model.itr = 1
    t0 = time.perf_counter()
    model.update()
    rest = time.perf_counter() - t0 - statistics.median(times)
    steps = -(-images.shape[0] // batch_size)
    return {"elbo": elbo, "epoch_s": statistics.median(times), "min_epoch_s": min(times),
            "step_ms": 1e3 * statistics.median(times) / steps, "rest_s": rest,
            "final_loss": model.loss_history_[-1]}


def main(args=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=None, help="number of images (default all 3000)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10, help="timed epochs per path")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paths", nargs="+", default=["analytic", "pyro"], choices=["analytic", "pyro"])
    p.add_argument("--outer", type=int, default=5, help="outer iterations for the projection")
    p.add_argument("--itr", type=int, default=200, help="epochs per outer iteration for the projection")
    a = p.parse_args(args)
    torch.set_num_threads(a.threads)
    images = _load_images(a.n)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for elbo in a.paths:
            rows.append(time_path(images, elbo, a.warmup, a.epochs, a.batch_size, a.seed, out))
    print(f"VAE(18) on {images.shape[0]} images, batch {a.batch_size}, {a.threads} thread(s), "
          f"torch {torch.__version__}, pyro {pyro.__version__}")
    print(f"{'elbo':<10}{'ms/step':>9}{'s/epoch':>9}{'min s/ep':>10}{'rest s/update':>15}"
          f"{f'projected {a.outer}x{a.itr} ep (s)':>28}")
    for r in rows:
        proj = a.outer * (a.itr * r["epoch_s"] + r["rest_s"])
        r["projected_s"] = proj
        print(f"{r['elbo']:<10}{r['step_ms']:>9.2f}{r['epoch_s']:>9.3f}{r['min_epoch_s']:>10.3f}"
              f"{r['rest_s']:>15.2f}{proj:>28.1f}")
    if len(rows) == 2:
        print(f"pyro / analytic time per step: {rows[1]['step_ms'] / rows[0]['step_ms']:.2f}")
    return rows


if __name__ == "__main__":
    main()
