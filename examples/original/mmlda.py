"""Multimodal categories of objects and motions (the original Serket ``examples/mMLDA/mMLDA.py``):
an MLDA over what a robot saw, heard and felt of 50 objects (object categories), an MLDA over its
joint angles (motion categories) and an MLDA over both MLDAs' classes.

Run ``python examples/original/mmlda.py`` (the original's settings: K = 10 everywhere, weights
200 per observation and 100 per lower MLDA, 100 Gibbs sweeps, 5 updates of the three modules in
turn; five seeds) or ``python examples/original/mmlda.py --seeds 0 --updates 1 --itr 10`` for a
quick try.  Prints the object and motion accuracies of every seed; ``--parent-weight token``
applies the top MLDA's message once per token (the rule before ``parent_weight``).

``--joint`` also fits the same graph (fresh modules, same seed) as ONE Pyro program
(``srk.joint_model``): the top MLDA draws one topic of each lower MLDA per object (counted as
``--top-weight`` tokens), which draws that MLDA's topic proportions; per-token topics and those
drawn topics summed out, the topic proportions with a Dirichlet guide per object, the topic-word
distributions point estimates.  ``--restarts`` random starts are fitted ``--restart-epochs``
each and the one with the best ELBO goes on to ``--joint-epochs`` (``--joint-start random``), or
the program starts from the message-passing run's modules (``--joint-start mp``) and is fitted
``--joint-epochs``; the modules then hold the
joint fit (``to_modules``) and run their recognition update (files in ``<output>/seed<s>_joint``).
Prints the joint accuracies beside message passing's.
"""

import argparse
import os
import time

import numpy as np
import torch

import serket_pyro as srk
from serket_pyro import datasets, mlda
from serket_pyro.metrics import accuracy

OBJECT_MODALITIES = ("dsift", "mfcc", "tactile")


def build(data, args, seed, root):
    """The three MLDAs connected (seed set first); returns the object, motion and top MLDAs."""
    srk.reset_module_counter()
    srk.set_seed(seed)
    common = dict(itr=args.itr, save_predictions=False, output_root=root, parent_weight=args.parent_weight)
    observations = [srk.Observation(getattr(data, m)) for m in OBJECT_MODALITIES]
    angle = srk.Observation(data.angle)
    mlda1 = mlda.MLDA(args.classes, [args.weight] * 3, category=data.object_category, **common)
    mlda2 = mlda.MLDA(args.classes, [args.weight], category=data.motion_category, **common)
    mlda3 = mlda.MLDA(args.classes, [args.top_weight] * 2, backward=args.backward, **common)
    mlda1.connect(*observations)
    mlda2.connect(angle)
    mlda3.connect(mlda1, mlda2)
    return mlda1, mlda2, mlda3


def run(data, args, seed):
    """One run of the graph; returns the object and motion MLDAs' accuracies."""
    mlda1, mlda2, mlda3 = build(data, args, seed, os.path.join(args.output, f"seed{seed}"))
    for _ in range(args.updates):
        mlda1.update()
        mlda2.update()
        mlda3.update()
    return mlda1.metrics_["accuracy"], mlda2.metrics_["accuracy"], (mlda1, mlda2, mlda3)


def fit_joint(top, args):
    """The graph under ``top`` as one program: the best of ``args.restarts`` random starts (mean
    loss of their last ``restart_epochs // 10`` epochs), fitted on to ``args.joint_epochs``."""
    best, best_loss = None, float("inf")
    for _ in range(args.restarts):
        program = srk.joint_model(top)
        losses = program.fit(args.restart_epochs, lr=args.joint_lr)
        loss = float(np.mean(losses[-max(1, args.restart_epochs // 10):]))
        if loss < best_loss:
            best, best_loss = program, loss
    best.fit(max(0, args.joint_epochs - args.restart_epochs), lr=args.joint_lr)
    return best


def run_joint(data, args, seed, fitted=None):
    """The same graph fitted jointly; returns the joint object and motion accuracies.
    ``fitted``: the message-passing run's modules, the one start (``--joint-start mp``, fitted
    ``args.joint_epochs``); otherwise fresh modules and :func:`fit_joint`'s random starts."""
    root = os.path.join(args.output, f"seed{seed}_joint")
    if fitted is not None:
        mlda1, mlda2, mlda3 = fitted
        for m in fitted:
            m.output_root = root
        program = srk.joint_model(mlda3)
        program.fit(args.joint_epochs, lr=args.joint_lr)
    else:
        mlda1, mlda2, mlda3 = build(data, args, seed, root)
        program = fit_joint(mlda3, args)
    obj = float(accuracy(data.object_category, program.predict(mlda1)))
    mot = float(accuracy(data.motion_category, program.predict(mlda2)))
    program.to_modules()  # the modules hold the joint fit: their recognition update writes the usual files
    for m in (mlda1, mlda2, mlda3):
        m.mode = "recog"
        m.update()
    return obj, mot


def main(args):
    torch.set_num_threads(args.threads)
    data = datasets.load_objects(root=args.data_dir)
    acc = {"object": [], "motion": []}
    if args.joint:
        acc.update({"joint_object": [], "joint_motion": []})
    for seed in args.seeds:
        t = time.perf_counter()
        obj, mot, modules = run(data, args, seed)
        acc["object"].append(obj)
        acc["motion"].append(mot)
        print(f"seed {seed}: object accuracy {obj:.2f}, motion accuracy {mot:.2f} ({time.perf_counter() - t:.0f} s)")
        if args.joint:
            t = time.perf_counter()
            obj, mot = run_joint(data, args, seed, modules if args.joint_start == "mp" else None)
            acc["joint_object"].append(obj)
            acc["joint_motion"].append(mot)
            print(f"seed {seed}: joint object accuracy {obj:.2f}, joint motion accuracy {mot:.2f} "
                  f"({time.perf_counter() - t:.0f} s)")
    acc = {k: np.array(v) for k, v in acc.items()}
    for k, v in acc.items():
        print(f"{k:<12} accuracy mean {v.mean():.3f} (min {v.min():.2f}, max {v.max():.2f}) "
              f"over seeds {list(args.seeds)}")
    print(f"files under {args.output}")
    return acc


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder with serket_objects.npz (default: $SERKET_PYRO_DATA)")
    p.add_argument("--classes", type=int, default=10, help="topics of every MLDA (original 10)")
    p.add_argument("--weight", type=int, default=200, help="tokens per object and observation (original 200)")
    p.add_argument("--top-weight", type=int, default=100, help="tokens per object for each lower MLDA's classes "
                   "in the top MLDA (original 100)")
    p.add_argument("--itr", type=int, default=100, help="Gibbs sweeps per update (original 100)")
    p.add_argument("--updates", type=int, default=5, help="updates of the three modules (original 5)")
    p.add_argument("--backward", choices=("exclusive", "original"), default="exclusive",
                   help="the top MLDA's backward message (MLDA(backward=...))")
    p.add_argument("--parent-weight", choices=("auto", "document", "token"), default="auto",
                   help="how the lower MLDAs apply the top MLDA's message (MLDA(parent_weight=...))")
    p.add_argument("--joint", action="store_true", help="also fit the graph jointly (one Pyro program)")
    p.add_argument("--joint-epochs", type=int, default=2000, help="joint SVI epochs (full batch) in all")
    p.add_argument("--joint-start", choices=("random", "mp"), default="random",
                   help="random: the best of --restarts random starts; mp: the message-passing run's modules")
    p.add_argument("--restarts", type=int, default=4, help="random starts of the joint fit (--joint-start random)")
    p.add_argument("--restart-epochs", type=int, default=500, help="epochs of each start before choosing")
    p.add_argument("--joint-lr", type=float, default=0.01, help="Adam learning rate of the joint fit")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--output", default="mmlda_out")
    p.add_argument("--threads", type=int, default=1)
    return p


if __name__ == "__main__":
    main(parser().parse_args())
