"""The GMM module against scikit-learn's ``GaussianMixture(n_init=4)`` on the tutorial VAE's latents
of MNIST, in one process, CPU time.

Run (``pip install -e '.[bench]'`` for the peer)::

    python benchmarks/gmm_peers.py                         # N = 3k, 10k, 30k, 70k
    python benchmarks/gmm_peers.py --n 3000 10000 --repeats 1
    python benchmarks/gmm_peers.py --kmeans-restarts 1 --screen-sweeps 40   # the fast setting

The tutorial VAE (18 latents, batch 500, ``--epochs`` 200, deskewed images as the tutorial systems' default) is trained once on the 3,000 tutorial
images and applied to the 70,000 MNIST images (train then test); the first N of those latents
(posterior means) are clustered by ``GMM(10).update()`` (defaults) and by
``GaussianMixture(10, covariance_type="full", n_init=4)``.  Single thread; CPU seconds
(``time.process_time``), the median of ``--repeats``; accuracy of the partition against the digit
labels (best one-to-one matching).  The latents are cached in ``--cache`` (a .npz).

The last columns are the GMM's collapsed log joint ``log p(x, z)`` (weights, means, covariances
integrated out under the module's prior) of three partitions of the same points: the module's,
scikit-learn's and the true digits'.  When scikit-learn's partition scores higher than the
module's, the module's search missed it (the model prefers the other); when lower, the model
itself prefers the module's partition.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import cpu_calls  # noqa: E402

import serket_pyro as srk  # noqa: E402
from serket_pyro.datasets import load_mnist, load_tutorial  # noqa: E402
from serket_pyro.features.deskew import deskew  # noqa: E402
from serket_pyro.metrics import accuracy  # noqa: E402
from serket_pyro.modules import GMM, VAE  # noqa: E402


def latents(epochs: int, cache: str | None, seed: int = 0):
    """``(70000, 18)`` float64 posterior means of the tutorial VAE on MNIST, and the labels."""
    if cache and os.path.exists(cache):
        with np.load(cache) as f:
            return f["z"], f["y"]
    d = load_tutorial(os.environ.get("SERKET_PYRO_DATA"))
    with tempfile.TemporaryDirectory() as tmp:
        srk.set_output_root(tmp)
        srk.set_seed(seed)
        vae = VAE(18, itr=epochs, batch_size=500, deskew=True)
        vae.connect(srk.Observation(d.images))
        vae.update()
        own = vae.forward_msg.loc.detach().to(torch.float64).numpy()

        def prepare(images):                             # as the VAE prepares its inputs
            x = torch.from_numpy(np.asarray(images))
            x = x / 255.0 if x.dtype == torch.uint8 or float(x.max()) > 1 else x
            return torch.from_numpy(deskew(x, (28, 28))).to(torch.float32)

        check, _, _ = vae.posterior(prepare(d.images))
        assert np.allclose(check.numpy(), own, atol=1e-4), "the images are prepared as the VAE prepares them"
        tr, te = load_mnist("train"), load_mnist("test")
        z, _, _ = vae.posterior(prepare(np.concatenate([tr.images, te.images])))
    z, y = z.to(torch.float64).numpy(), np.concatenate([tr.labels, te.labels])
    if cache:
        np.savez(cache, z=z, y=y)
    return z, y


def log_joint(gmm, x, labels) -> float:
    """The GMM's collapsed log joint of the partition ``labels`` of ``x`` under its prior."""
    from serket_pyro.modules.gmm import _log_collapsed_joint, _suff_stats
    x = torch.as_tensor(x, dtype=torch.float64)
    z = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    prior = gmm._prior(x)
    xc = x - prior.loc
    xx = (xc.unsqueeze(-1) * xc.unsqueeze(-2)).reshape(len(x), -1)
    return _log_collapsed_joint(prior, gmm.alpha, _suff_stats(xc, xx, z, gmm.K), z)


def main(args=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[3000, 10000, 30000, 70000])
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--screen-sweeps", type=int, default=None, help="GMM(screen_sweeps=...); default the module's")
    p.add_argument("--kmeans-restarts", type=int, default=None, help="GMM(kmeans_restarts=...); default the module's")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "serket_pyro_mnist_latents.npz"))
    a = p.parse_args(args)
    torch.set_num_threads(1)
    from sklearn.mixture import GaussianMixture

    z_all, y_all = latents(a.epochs, a.cache)
    rows = []
    print(f"GMM(10).update() vs GaussianMixture(10, n_init=4): CPU seconds (median of {a.repeats}), accuracy")
    print(f"{'N':>6}  {'GMM':>8}  {'sklearn':>8}  {'ratio':>5}  {'acc GMM':>7}  {'acc sklearn':>11}  "
          f"{'lj GMM':>10}  {'lj sklearn':>10}  {'lj digits':>10}")
    root = tempfile.mkdtemp(prefix="gmm_peers_")
    for n in a.n:
        z, y = z_all[:n], y_all[:n]
        out = {}

        def ours():
            srk.reset_module_counter()
            srk.set_seed(a.seed)
            kw = {k: v for k, v in (("screen_sweeps", a.screen_sweeps), ("kmeans_restarts", a.kmeans_restarts))
                  if v is not None}
            g = GMM(10, category=y, output_root=root, **kw)
            g.connect(srk.Observation(z))
            g.update()
            out["ours"] = accuracy(y, g.assignments_.cpu().numpy())
            out["gmm"] = g

        def peer():
            gm = GaussianMixture(10, covariance_type="full", n_init=4, random_state=a.seed).fit(z)
            out["peer"] = accuracy(y, gm.predict(z))
            out["peer_z"] = gm.predict(z)

        ts = statistics.median(cpu_calls(ours, a.repeats))
        tp = statistics.median(cpu_calls(peer, a.repeats))
        g = out["gmm"]
        joint = [log_joint(g, z, part) for part in (g.assignments_, out["peer_z"], y)]
        rows.append((n, ts, tp, out["ours"], out["peer"], *joint))
        print(f"{n:>6}  {ts:>8.2f}  {tp:>8.2f}  {ts / tp:>5.1f}  {out['ours']:>7.3f}  {out['peer']:>11.3f}  "
              + "  ".join(f"{j:>10.0f}" for j in joint), flush=True)
    return rows


if __name__ == "__main__":
    main()
