"""The tutorial systems fitted jointly by the compiler (``srk.joint_program``), after message passing.

    python benchmarks/joint_graphs.py                                   # VAE+GMM+MLDA(+MM), seed 0
    python benchmarks/joint_graphs.py --systems vae_gmm --seeds 0 1 2 3 4
    python benchmarks/joint_graphs.py --n 500 --mp-epochs 5 --epochs 2   # a quick look
    python benchmarks/joint_graphs.py --systems vae_gmm --start vade --batch-size 128 --lr 1e-3 --lr-networks 1e-3

Each run: the tutorial system (``serket_pyro.models.<system>.build``, tutorial settings) is fitted
by message passing (``--mp-iterations`` outer iterations, ``--mp-epochs`` VAE epochs each), its
result module's accuracy recorded; then the same graph is compiled into one Pyro program, which
starts from the modules' fitted state (VAE networks, GMM Gaussians, MLDA topics and documents'
proportions, Markov transitions), is fitted jointly for ``--epochs`` epochs and handed back with
``to_modules()``.  Prints one line per run (message-passing and joint accuracy of the result
module, seconds) and writes the records to ``--json``.
"""

import argparse
import importlib
import json
import os
import time

import numpy as np

import serket_pyro as srk
from serket_pyro.datasets import load_tutorial
from serket_pyro.metrics import accuracy


def run(system, seed, data, args):
    srk.reset_module_counter()
    srk.set_seed(seed)
    build = importlib.import_module(f"serket_pyro.models.{system}").build
    n = args.n
    inputs = (data.images[:n],) if "mlda" not in system else (data.images[:n], data.hac[:n])
    if args.start == "vade":  # VaDE's networks, neighbour-embedding pretraining, GMM start (JointModel's recipe)
        from serket_pyro.modules.vae import mlp_networks

        s = build(*inputs, data.category[:n], latent_dim=10, batch_size=128, output_root=args.output)
        s["vae"].encoder, s["vae"].decoder = mlp_networks(data.images.shape[1], 10)
    else:
        s = build(*inputs, data.category[:n], epochs=args.mp_epochs, output_root=args.output)
    result = s["mlda"] if "mlda" in system else s["gmm"]
    t0 = time.time()
    if args.start == "vade":
        jm = srk.joint_model(s, compiled=False, covariance="full")
        jm.fit(0, pretrain_epochs=args.pretrain_epochs, pretrain_kl_weight=0.0, pretrain_neighbour_weight=10.0,
               n_neighbours=10, init="gmm", gmm_prior="neighbours")
        jm.to_modules()  # the start, handed to the modules; the joint epochs below run in the compiled program
        mp_acc = float("nan")
    else:
        s.fit(n_iter=args.mp_iterations, seed=seed, progress=False)
        mp_acc = float(result.metrics_["accuracy"])
    t_mp = time.time() - t0
    t0 = time.time()
    p = srk.joint_program(s, chunk_len=args.chunk_len)
    start_acc = float(accuracy(data.category[:n], p.predict(result)))
    losses, curve, done = [], {}, 0
    for upto in sorted(set(args.eval_epochs + [args.epochs])):  # accuracy after these epoch counts
        if upto > args.epochs:
            break
        losses += p.fit(upto - done, batch_size=args.batch_size, lr=args.lr, lr_networks=args.lr_networks)
        done = upto
        curve[upto] = float(accuracy(data.category[:n], p.predict(result)))
    joint_acc = curve[args.epochs]
    p.to_modules()
    t_joint = time.time() - t0
    rec = {"system": system, "seed": seed, "n": n, "message_passing_accuracy": mp_acc,
           "joint_start_accuracy": start_acc, "joint_accuracy": joint_acc, "accuracy_by_epoch": curve, "loss_first": losses[0] if losses else None,
           "loss_last": losses[-1] if losses else None, "seconds_message_passing": t_mp, "seconds_joint": t_joint}
    print(f"{system} seed {seed}: {args.start} {mp_acc:.3f} ({t_mp:.0f} s); joint start {start_acc:.3f}, "
          f"after {args.epochs} epochs {joint_acc:.3f} ({t_joint:.0f} s); by epoch {curve}", flush=True)
    return rec


def main(args):
    data = load_tutorial(args.data_dir)
    records = [run(system, seed, data, args) for system in args.systems for seed in args.seeds]
    for system in args.systems:
        r = [x for x in records if x["system"] == system]
        print(f"{system}: message passing {np.mean([x['message_passing_accuracy'] for x in r]):.3f}, "
              f"joint {np.mean([x['joint_accuracy'] for x in r]):.3f} over seeds {[x['seed'] for x in r]}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "records": records}, f, indent=1)
    return records


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", nargs="+", default=["vae_gmm_mlda", "vae_gmm_mlda_mm"],
                   choices=["vae_gmm", "vae_gmm_mm", "vae_gmm_mlda", "vae_gmm_mlda_mm"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--n", type=int, default=3000, help="data points (the tutorial's 3,000)")
    p.add_argument("--mp-iterations", type=int, default=5, help="message-passing outer iterations (tutorial 5)")
    p.add_argument("--mp-epochs", type=int, default=200, help="VAE epochs per iteration (tutorial 200)")
    p.add_argument("--start", default="message_passing", choices=["message_passing", "vade"],
                   help="message_passing: the tutorial system first; vade (vae_gmm): VaDE's networks pretrained "
                        "with the neighbour-embedding term and a GMM start (JointModel.fit(0, ...)), as "
                        "examples/joint_vae_gmm.py")
    p.add_argument("--pretrain-epochs", type=int, default=150, help="--start vade: pretraining epochs")
    p.add_argument("--epochs", type=int, default=20, help="joint epochs")
    p.add_argument("--eval-epochs", type=int, nargs="*", default=[], help="also report the accuracy after these epochs")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--chunk-len", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate of the global parameters")
    p.add_argument("--lr-networks", type=float, default=1e-4, help="Adam learning rate of the VAE's networks")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", default=os.path.join("runs", "joint_graphs"))
    p.add_argument("--json", default=None)
    return p


if __name__ == "__main__":
    main(parser().parse_args())
