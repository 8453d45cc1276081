"""Five MLDAs in a chain (the original Serket ``examples/mMLDA/mMLDA2.py``): MLDA1 on data000,
MLDA2 on MLDA1's classes and data001, ..., MLDA5 on MLDA4's classes and data004; 50 documents in
10 categories, every MLDA scored against them.

Run ``python examples/original/mmlda_chain.py`` (the original's settings: K = 10, weights 100,
100 Gibbs sweeps, 5 updates of the five modules in turn; five seeds) or
``python examples/original/mmlda_chain.py --seeds 0 --updates 1 --itr 10`` for a quick try.

``--joint`` also fits the same chain (fresh modules, same seed) as ONE Pyro program
(``srk.joint_model``): each MLDA draws one topic of the MLDA below per document (counted as
``--weight`` tokens), which draws that MLDA's topic proportions; the best of ``--restarts``
random starts (ELBO after ``--restart-epochs``) is fitted on to ``--joint-epochs``
(``--joint-start random``), or the program starts from the message-passing run's modules (their
``phi_`` and ``theta_``; ``--joint-start mp``) and is fitted ``--joint-epochs``; the modules then
hold the fit (``to_modules``) and run their recognition update (files in
``<output>/seed<s>_joint``).  Prints the joint accuracies beside message passing's.
"""

import argparse
import os
import time

import numpy as np
import torch

import serket_pyro as srk
from serket_pyro import datasets, mlda
from serket_pyro.metrics import accuracy


def build(data, args, seed, root):
    """The five MLDAs connected in a chain (seed set first), MLDA1 first."""
    srk.reset_module_counter()
    srk.set_seed(seed)
    observations = [srk.Observation(x) for x in data.modalities()]
    modules = []
    for i, obs in enumerate(observations):
        m = mlda.MLDA(args.classes, [args.weight] * (1 if i == 0 else 2), itr=args.itr, category=data.category,
                      save_predictions=False, output_root=root, parent_weight=args.parent_weight)
        m.connect(obs) if i == 0 else m.connect(modules[-1], obs)
        modules.append(m)
    return modules


def run(data, args, seed):
    """One run of the chain; returns the five MLDAs' accuracies and the modules."""
    modules = build(data, args, seed, os.path.join(args.output, f"seed{seed}"))
    for _ in range(args.updates):
        for m in modules:
            m.update()
    return [m.metrics_["accuracy"] for m in modules], modules


def run_joint(data, args, seed, fitted=None):
    """The same chain fitted jointly; returns the five MLDAs' accuracies.  ``fitted``: the
    message-passing run's modules, the one start (``--joint-start mp``); otherwise fresh modules
    and the best of ``args.restarts`` random starts (mean loss of their last
    ``restart_epochs // 10`` epochs) fitted on."""
    root = os.path.join(args.output, f"seed{seed}_joint")
    if fitted is not None:
        modules = fitted
        for m in modules:
            m.output_root = root
        best = srk.joint_model(modules[-1])
        best.fit(args.joint_epochs, lr=args.joint_lr)
    else:
        modules = build(data, args, seed, root)
        best, best_loss = None, float("inf")
        for _ in range(args.restarts):
            program = srk.joint_model(modules[-1])
            losses = program.fit(args.restart_epochs, lr=args.joint_lr)
            loss = float(np.mean(losses[-max(1, args.restart_epochs // 10):]))
            if loss < best_loss:
                best, best_loss = program, loss
        best.fit(max(0, args.joint_epochs - args.restart_epochs), lr=args.joint_lr)
    acc = [float(accuracy(data.category, best.predict(m))) for m in modules]
    best.to_modules()  # the modules hold the joint fit: their recognition update writes the usual files
    for m in modules:
        m.mode = "recog"
        m.update()
    return acc


def main(args):
    torch.set_num_threads(args.threads)
    data = datasets.load_mmlda_chain(root=args.data_dir)
    rows, joint = [], []
    for seed in args.seeds:
        t = time.perf_counter()
        acc, modules = run(data, args, seed)
        rows.append(acc)
        print(f"seed {seed}: accuracy of MLDA1..MLDA{len(rows[-1])} "
              f"{' / '.join(f'{a:.2f}' for a in rows[-1])} ({time.perf_counter() - t:.0f} s)")
        if args.joint:
            t = time.perf_counter()
            joint.append(run_joint(data, args, seed, modules if args.joint_start == "mp" else None))
            print(f"seed {seed}: joint accuracy of MLDA1..MLDA{len(joint[-1])} "
                  f"{' / '.join(f'{a:.2f}' for a in joint[-1])} ({time.perf_counter() - t:.0f} s)")
    acc = np.array(rows)
    print(f"mean {' / '.join(f'{a:.3f}' for a in acc.mean(0))}, min {' / '.join(f'{a:.2f}' for a in acc.min(0))} "
          f"over seeds {list(args.seeds)}")
    if args.joint:
        j = np.array(joint)
        print(f"joint mean {' / '.join(f'{a:.3f}' for a in j.mean(0))}, min "
              f"{' / '.join(f'{a:.2f}' for a in j.min(0))} over seeds {list(args.seeds)}")
    print(f"files under {args.output}")
    return (acc, np.array(joint)) if args.joint else acc


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder with serket_mmlda_chain.npz (default: $SERKET_PYRO_DATA)")
    p.add_argument("--classes", type=int, default=10, help="topics of every MLDA (original 10)")
    p.add_argument("--weight", type=int, default=100, help="tokens per document and child (original 100)")
    p.add_argument("--itr", type=int, default=100, help="Gibbs sweeps per update (original 100)")
    p.add_argument("--updates", type=int, default=5, help="updates of the five modules (original 5)")
    p.add_argument("--parent-weight", choices=("auto", "document", "token"), default="auto",
                   help="how each MLDA applies its parent's message (MLDA(parent_weight=...))")
    p.add_argument("--joint", action="store_true", help="also fit the chain jointly (one Pyro program)")
    p.add_argument("--joint-epochs", type=int, default=2000, help="joint SVI epochs (full batch) in all")
    p.add_argument("--joint-start", choices=("random", "mp"), default="random",
                   help="random: the best of --restarts random starts; mp: the message-passing run's modules")
    p.add_argument("--restarts", type=int, default=4, help="random starts of the joint fit (--joint-start random)")
    p.add_argument("--restart-epochs", type=int, default=500, help="epochs of each start before choosing")
    p.add_argument("--joint-lr", type=float, default=0.01, help="Adam learning rate of the joint fit")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--output", default="mmlda_chain_out")
    p.add_argument("--threads", type=int, default=1)
    return p


if __name__ == "__main__":
    main(parser().parse_args())
