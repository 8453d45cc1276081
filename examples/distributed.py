"""The VAE+GMM+MM tutorial system (or VAE+GMM+MLDA+MM on image/speech pairs) data-parallel over
several processes (torch.distributed).

Launch on one machine with 2 processes (``gloo`` on CPU, ``nccl`` on GPUs)::

    torchrun --nproc_per_node 2 examples/distributed.py --n-points 3000 --epochs 20 --iterations 3

or on several machines (the same command on each, ``--node_rank`` 0..nnodes-1, rank 0's address)::

    torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 --master_addr HOST0 --master_port 29500 \\
        examples/distributed.py --data mnist --order cyclic

``--system vae_gmm_mlda_mm --data pairs --n-points 30000`` is the four-module system on MNIST +
Spoken Arabic Digit pairs in cyclic digit order (:func:`serket_pyro.paired_data.build_sad_pairs`,
utterances reused where a digit has too few; ``--pairs-cache FILE`` keeps the built pairs in an
``.npz`` so that the processes and later runs do not build them again).

``python examples/distributed.py ...`` (no torchrun) is the same run in one process.  Every process
loads the data and keeps its contiguous block (:func:`serket_pyro.fit` with ``distributed=True``);
rank 0 writes the same files as one process.  With ``--checkpoint-dir`` each process checkpoints
its shard after every outer iteration and ``--resume`` continues (with as many processes).
"""

import argparse
import json
import time

import os

import numpy as np
import torch

import serket_pyro as srk
from serket_pyro import distributed, gmm, mm, vae
from serket_pyro.app.runner import add_tutorial_arguments, cyclic_order, load_inputs
from serket_pyro.models import vae_gmm_mlda_mm


def load_pairs(args):
    """``(images, hac, labels, source)``: ``--n`` MNIST + Spoken Arabic Digit training pairs in cyclic
    digit order, read from ``--pairs-cache`` when it holds them (rank 0 builds and writes it
    otherwise, the other processes wait and read it)."""
    n = 30000 if args.n is None else args.n
    cache = args.pairs_cache
    if cache is None or not os.path.exists(cache):
        if distributed.rank() == 0 or cache is None:
            from serket_pyro.paired_data import build_sad_pairs

            train = build_sad_pairs(n, 10, order="cyclic", seed=args.seed, root=args.data_dir, reuse=True).train
            if cache is not None:
                tmp = cache + ".tmp.npz"
                np.savez(tmp, images=train.images, hac=train.hac, category=train.category)
                os.replace(tmp, cache)
            arrays = (train.images, train.hac, train.category)
        if cache is not None:
            distributed.barrier()
    if cache is not None:
        with np.load(cache, allow_pickle=False) as f:
            arrays = (f["images"], f["hac"], f["category"])
        if len(arrays[0]) != n:
            raise ValueError(f"--pairs-cache {cache} holds {len(arrays[0])} pairs, not --n {n}")
    return (*arrays, f"{n} MNIST + Spoken Arabic Digit pairs (paired_data.build_sad_pairs)")


def load_data(args):
    """``(images, labels, source)``: the tutorial's 3000 points, or MNIST's 70,000 (``--data mnist``),
    first ``--n``, in their order or in cyclic digit order 0, 1, ..., 9, 0, ... (``--order cyclic``)."""
    if args.data == "mnist":
        from serket_pyro.datasets import load_mnist

        tr, te = load_mnist("train", root=args.data_dir), load_mnist("test", root=args.data_dir)
        images, labels = np.concatenate([tr.images, te.images]), np.concatenate([tr.labels, te.labels])
        source = "MNIST train + test"
    else:
        images, _, labels, source = load_inputs(args.data_dir, None)
        images, labels = np.asarray(images), np.asarray(labels)
    if args.order == "cyclic":
        idx = cyclic_order(labels)
        images, labels = images[idx], labels[idx]
    if args.n is not None:
        images, labels = images[: args.n], labels[: args.n]
    return images, labels, source


def main(args):
    torch.set_num_threads(args.threads)
    rank, world = distributed.init_process_group()  # (0, 1) without torchrun
    srk.set_output_root(args.output)
    if (args.system == "vae_gmm_mlda_mm") != (args.data == "pairs"):
        raise ValueError("--system vae_gmm_mlda_mm goes with --data pairs (images and speech), and --data pairs "
                         "with it")
    if args.data == "pairs":
        images, hac, labels, source = load_pairs(args)
    else:
        images, labels, source = load_data(args)
    if rank == 0:
        order = "cyclic" if args.data == "pairs" else args.order
        print(f"data: {len(images)} points from {source} ({order} order), {world} process(es)")

    srk.reset_module_counter()
    if args.system == "vae_gmm_mlda_mm":
        system = vae_gmm_mlda_mm.build(images, hac, labels, latent_dim=args.latent_dim, epochs=args.epochs,
                                       batch_size=args.batch_size, n_classes=args.classes, deskew=args.deskew,
                                       device=args.device)
        modules = [system[k] for k in ("vae", "gmm", "mlda", "mm")]
        result_module = system["mlda"]
    else:
        obs = srk.Observation(images)
        vae1 = vae.VAE(args.latent_dim, itr=args.epochs, batch_size=args.batch_size, deskew=args.deskew,
                       device=args.device, progress=False)
        gmm1 = gmm.GMM(args.classes, category=labels, device=args.device)
        vae1.connect(obs)
        gmm1.connect(vae1)
        modules = [vae1, gmm1]
        if args.system == "vae_gmm_mm":
            mm1 = mm.MarkovModel(device=args.device)
            mm1.connect(gmm1)
            modules.append(mm1)
        result_module = gmm1

    per_iter = []
    clock = [time.perf_counter(), time.process_time()]
    by_module = {}  # CPU seconds of each module's updates in the current outer iteration

    def timed(mod):
        update = mod.update

        def run(*a, **k):
            t = time.process_time()
            try:
                return update(*a, **k)
            finally:
                by_module[type(mod).__name__] = by_module.get(type(mod).__name__, 0.0) + time.process_time() - t
        mod.update = run

    for mod in modules:
        timed(mod)

    def record(it, rec):  # wall and CPU seconds, bytes this rank sent into all-reduces and gathers
        now = [time.perf_counter(), time.process_time()]
        per_iter.append({"wall_s": now[0] - clock[0], "cpu_s": now[1] - clock[1],
                         "bytes_reduced": distributed.bytes_reduced(), "cpu_by_module": dict(by_module)})
        by_module.clear()
        distributed.reset_bytes_reduced()
        clock[:] = [time.perf_counter(), time.process_time()]

    t0 = time.perf_counter()
    srk.fit(*modules, n_iter=args.iterations, seed=args.seed, progress=not args.no_progress and rank == 0,
            checkpoint_dir=args.checkpoint_dir, resume=args.resume, callback=record,
            settings={"--n": args.n, "--epochs": args.epochs, "--data": args.data, "--order": args.order},
            distributed=True)
    seconds = time.perf_counter() - t0
    every = [per_iter]
    if world > 1:
        every = [None] * world
        torch.distributed.all_gather_object(every, per_iter)
    scores = dict(result_module.metrics_)
    result = {"processes": world, "n": len(images), "seconds": seconds, "accuracy": scores.get("accuracy"),
              "per_rank": every}
    if rank == 0:
        print(f"{args.system}: {args.iterations} outer iterations in {seconds:.1f} s on {world} process(es)")
        if "accuracy" in scores:
            print(f"accuracy {scores['accuracy']:.3f} (Hungarian), ARI {scores['ari']:.3f}, NMI {scores['nmi']:.3f}")
        for r, its in enumerate(every):
            if its:
                print(f"rank {r}: per outer iteration wall {np.mean([i['wall_s'] for i in its]):.2f} s, CPU "
                      f"{np.mean([i['cpu_s'] for i in its]):.2f} s, all-reduced "
                      f"{np.mean([i['bytes_reduced'] for i in its]) / 1e6:.3f} MB; CPU s by module "
                      + ", ".join(f"{k} {np.mean([i['cpu_by_module'].get(k, 0.0) for i in its]):.2f}"
                                  for k in its[0]["cpu_by_module"]))
        print(f"files: {result_module.output_dir} (class_learn.txt, acc_learn.txt, Pdz_learn.txt)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f)
    distributed.destroy_process_group()
    return result


def parser():
    p = add_tutorial_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument("--system", default="vae_gmm_mm", choices=["vae_gmm", "vae_gmm_mm", "vae_gmm_mlda_mm"])
    p.add_argument("--data", default="tutorial", choices=["tutorial", "mnist", "pairs"],
                   help="the tutorial's 3000 MNIST digits (default), MNIST's 70,000, or MNIST + Spoken Arabic "
                        "Digit pairs (--system vae_gmm_mlda_mm; --n pairs, default 30,000)")
    p.add_argument("--pairs-cache", default=None, help="--data pairs: .npz that keeps the built pairs")
    p.add_argument("--order", default="data", choices=["data", "cyclic"],
                   help="the data's order (the tutorial's is already cyclic) or cyclic digit order 0..9, 0..9, ...")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    p.add_argument("--json", default=None, help="write the numbers there (rank 0)")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
