"""The VAE's training epoch against its own matrix-product floor, one CPU thread, CPU time.

    python benchmarks/vae_floor.py                 # the tutorial VAE: 784-128-18, batch 500, 3,000 images

Times (``time.process_time``, median over ``--epochs`` after ``--warmup``) one epoch of
``VAE(18, batch_size=500)._train_analytic`` on the tutorial images, and the matrix products such an
epoch cannot avoid: for every minibatch and every ``nn.Linear`` of the encoder and decoder, the
forward product, the weight gradient and (but for the first layer) the input gradient, on
preallocated float32 tensors of the same shapes.  The ratio says how far the epoch is from that
floor (the rest: elementwise work, autograd, the optimiser, Python).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch import nn

import serket_pyro as srk
from serket_pyro.datasets import load_tutorial


def main(args=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--adam", choices=["default", "foreach", "fused"], default="default",
                   help="the epoch's optimiser: torch.optim.Adam as the VAE builds it, or with foreach=True "
                        "or fused=True")
    p.add_argument("--compare-adam", action="store_true",
                   help="first time epochs with each of the three optimisers in turn")
    a = p.parse_args(args)
    torch.set_num_threads(1)
    d = load_tutorial()
    with tempfile.TemporaryDirectory() as tmp:
        srk.set_seed(0)
        vae = srk.VAE(18, itr=1, batch_size=a.batch_size, output_root=tmp)
        vae.connect(srk.Observation(d.images))
        vae.update()                                         # builds the networks and the optimiser
        x, _ = vae._read_inputs()
        if a.adam != "default":
            vae._optim = torch.optim.Adam(vae._trainable(), lr=vae.lr, **{a.adam: True})
        N = x.shape[0]
        if a.compare_adam:      # the three optimisers in turn, in this process, medians of rounds
            opts = {k: torch.optim.Adam(vae._trainable(), lr=vae.lr, **kw)
                    for k, kw in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True}))}
            cmp = {k: [] for k in opts}
            for r in range(a.warmup + a.epochs):
                for k, opt in opts.items():
                    vae._optim = opt
                    t0 = time.process_time()
                    vae._train_analytic(x, None, None, range(1))
                    if r >= a.warmup:
                        cmp[k].append(time.process_time() - t0)
            print("epoch CPU ms by optimiser (one process, interleaved): "
                  + ", ".join(f"{k} {statistics.median(v) * 1e3:.1f}" for k, v in cmp.items()))
            vae._optim = opts[a.adam]

        def epoch():
            vae._train_analytic(x, None, None, range(1))

        for _ in range(a.warmup):
            epoch()
        ts = []
        for _ in range(a.epochs):
            t0 = time.process_time()
            epoch()
            ts.append(time.process_time() - t0)
        layers = [m for net in (vae.encoder_, vae.decoder_) for m in net.modules() if isinstance(m, nn.Linear)]
    batches = [len(b) for b in torch.arange(N).split(a.batch_size)]
    ops = []
    for i, lin in enumerate(layers):
        for B in batches:
            xin = torch.randn(B, lin.in_features)
            W = torch.randn(lin.out_features, lin.in_features)
            g = torch.randn(B, lin.out_features)
            ops.append((xin, W.t()))                         # forward
            ops.append((g.t(), xin))                         # weight gradient
            if i:
                ops.append((g, W))                           # input gradient

    def floor():
        for u, v in ops:
            torch.mm(u, v)

    for _ in range(a.warmup):
        floor()
    tf = []
    for _ in range(a.epochs):
        t0 = time.process_time()
        floor()
        tf.append(time.process_time() - t0)
    te, tfm = statistics.median(ts), statistics.median(tf)
    flops = sum(2 * u.shape[0] * u.shape[1] * v.shape[1] for u, v in ops)
    print(f"VAE epoch ({N} images, batch {a.batch_size}, layers "
          f"{[(m.in_features, m.out_features) for m in layers]}): {te * 1e3:.1f} ms; its matrix products "
          f"alone: {tfm * 1e3:.1f} ms ({flops / 1e9:.2f} GFLOP, {flops / tfm / 1e9:.1f} GFLOP/s); ratio {te / tfm:.2f}")
    return te, tfm


if __name__ == "__main__":
    main()
