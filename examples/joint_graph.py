"""A graph the VaDE recipe (JointModel) refuses, fitted jointly by the compiler: GMM -> MarkovModel
on the original Serket HMM data (100 2-D points from 4 Gaussians visited cyclically).

    python examples/joint_graph.py                  # 5 seeds, 200 epochs
    python examples/joint_graph.py --seeds 0 --epochs 20   # a quick try

The graph is built with the public API only (Observation, GMM, MarkovModel); ``srk.joint_model``
compiles it into one Pyro program (the GMM's class IS the chain's state; the chain summed by the
forward algorithm, the Gaussians and transitions point estimates), fits it by SVI, and writes the
parameters back into the modules, which then run their usual recognition update (files in
``--output``).  Prints the joint accuracy of every seed.
"""

import argparse
import os

import numpy as np

import serket_pyro as srk
from serket_pyro.datasets import load_hmm_toy
from serket_pyro.metrics import accuracy


def run(data, args, seed):
    srk.reset_module_counter()
    srk.set_seed(seed)
    root = os.path.join(args.output, f"seed{seed}")
    obs = srk.Observation(data.data)
    g = srk.GMM(args.classes, category=data.category, output_root=root)
    m = srk.MarkovModel(category=data.category, output_root=root)
    g.connect(obs)
    m.connect(g)
    program = srk.joint_model(m, chunk_len=args.chunk_len)
    losses = program.fit(args.epochs, lr=args.lr)
    acc = float(accuracy(data.category, program.predict(g)))
    program.to_modules()  # the modules hold the joint fit: their recognition update writes the usual files
    for mod in (g, m):
        mod.mode = "recog"
    g.update()
    m.update()
    return acc, losses[-1], g.metrics_["accuracy"]


def main(args):
    data = load_hmm_toy(args.data_dir)
    out = {"accuracy": [], "loss": [], "recog_accuracy": []}
    for seed in args.seeds:
        acc, loss, recog = run(data, args, seed)
        out["accuracy"].append(acc)
        out["loss"].append(loss)
        out["recog_accuracy"].append(recog)
        print(f"seed {seed}: joint accuracy {acc:.3f} (GMM recognition after to_modules {recog:.3f}), "
              f"loss {loss:.4f} per point")
    out = {k: np.asarray(v) for k, v in out.items()}
    print(f"GMM -> MarkovModel joint accuracy: mean {out['accuracy'].mean():.3f} over {len(args.seeds)} seeds")
    return out


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=4, help="GMM classes (the original's 4)")
    p.add_argument("--epochs", type=int, default=200, help="joint epochs (full-batch SVI steps)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate of the parameters")
    p.add_argument("--chunk-len", type=int, default=100, help="rows per contiguous chunk of the chain")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", default="output_joint_graph")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
