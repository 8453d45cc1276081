"""Data-parallel VAE+GMM+MM on 1 and 2 processes (torchrun, gloo), and a measured model of how the
time per outer iteration scales to more workers.

    python benchmarks/distributed.py --data mnist --order cyclic --n 10000 --epochs 5 --iterations 2
    python benchmarks/distributed.py --model-only --n 3000      # only the per-module costs and the model

Part 1 runs ``examples/distributed.py`` under ``torchrun --nproc_per_node P`` for P = 1, 2 and prints,
per outer iteration: wall seconds, CPU seconds of every rank, the bytes each rank put into
all-reduces and all-gathers (communication volume), and the accuracy.

Part 2 measures in one process the cost of one outer iteration per module at two sizes (and the
number of forward-backward passes, E-steps, of the Markov model's EM) and models
``T(W) = (t_vae + t_gmm + t_mm (1 + s))(N / W) + comm(W) / bandwidth + latency * hops`` for
N = 1,000,000 pairs and W = 8, 64 workers: every module works on its shard (the Markov model's
E-step is the sharded forward-backward; ``s`` is the cost of a shard's transfer product relative
to its local pass, measured by part 0), ring all-reduce (each worker sends and receives
``2 (W - 1) / W`` times the buffer, ``2 (W - 1)`` hops) and ring all-gather (``W - 1`` hops).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "distributed.py")


def run_torchrun(procs, args, tmp):
    out = os.path.join(tmp, f"p{procs}.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port",
           str(29500 + procs), EXAMPLE, "--data", args.data, "--order", args.order, "--epochs", str(args.epochs),
           "--iterations", str(args.iterations), "--seed", str(args.seed), "--output", os.path.join(tmp, f"out{procs}"),
           "--json", out, "--no-progress"]
    if args.n:
        cmd += ["--n-points", str(args.n)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    res = json.load(open(out))
    res["launcher_seconds"] = time.perf_counter() - t0
    return res


def module_costs(n, epochs, seed=0):
    """Seconds of one outer iteration of each module (second iteration: warm chains) on n points,
    and ``mm_esteps``, the Markov model's forward-backward passes in that update."""
    import serket_pyro as srk
    from serket_pyro import gmm, mm, vae
    from serket_pyro.app.runner import load_inputs
    from serket_pyro.modules import mm as mm_mod

    calls = [0]
    fb = mm_mod.sharded_forward_backward

    def counted(*a, **k):
        calls[0] += 1
        return fb(*a, **k)

    images, _, labels, _ = load_inputs(None, None)
    reps = -(-n // len(images))
    images = np.concatenate([images] * reps)[:n]
    labels = np.concatenate([labels] * reps)[:n]
    srk.reset_module_counter()
    srk.set_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        srk.set_output_root(tmp)
        obs = srk.Observation(images)
        v = vae.VAE(18, itr=epochs, batch_size=500, deskew=True)
        g = gmm.GMM(10, category=labels)
        m = mm.MarkovModel()
        v.connect(obs)
        g.connect(v)
        m.connect(g)
        times = {}
        mm_mod.sharded_forward_backward = counted
        try:
            for it in range(2):
                calls[0] = 0
                for name, mod in (("vae", v), ("gmm", g), ("mm", m)):
                    t0 = time.perf_counter()
                    mod.update()
                    times[name] = time.perf_counter() - t0
        finally:
            mm_mod.sharded_forward_backward = fb
        times["mm_esteps"] = calls[0]
    return times


def model(costs_small, costs_big, n_small, n_big, N, W, epochs, bandwidth, latency, n_params, K=10, D=18,
          summary_ratio=1.0):
    """Modelled seconds per outer iteration on W workers for N points (see the module docstring)."""
    def per_point(name):
        return (costs_big[name] - costs_small[name]) / (n_big - n_small)

    def at(name, n):
        return costs_big[name] + per_point(name) * (n - n_big)

    shard = N / W
    mm_s = at("mm", shard) * (1 + (summary_ratio if W > 1 else 0.0))  # sharded E-steps: + transfer products
    compute = at("vae", shard) + at("gmm", shard) + mm_s
    ring = 2 * (W - 1) / W
    steps = epochs * int(np.ceil(N / 500))  # VAE gradient all-reduces: one per global minibatch of 500
    sweeps = 100 + 100  # GMM: one warm chain + the message-started chain, 100 sweeps each
    esteps = max(costs_small["mm_esteps"], costs_big["mm_esteps"])
    # per E-step: one all-gather of the K^2 + 1 summaries, all-reduce of
    # the K x K counts and of eps's sum; the per-point output files (N x K) gathered to rank 0
    vol = steps * 4 * n_params + sweeps * 8 * (K + K * D + K * D * D) + esteps * 8 * (2 * K * K + 2) \
        + 8 * N * K * 2 / W
    hops = (steps + sweeps) * 2 * (W - 1) + esteps * ((W - 1) + 2 * 2 * (W - 1))
    comm = ring * vol / bandwidth + esteps * 8 * (K * K + 1) * (W - 1) / bandwidth + hops * latency
    return {"W": W, "compute_s": compute, "comm_s": comm, "total_s": compute + comm, "bytes": vol,
            "vae_s": at("vae", shard), "gmm_s": at("gmm", shard), "mm_s": mm_s, "esteps": esteps}


def sharded_fb_timing(T=200_000, K=10, workers=(8, 64), seed=0):
    """Seconds of the unsharded forward-backward against one shard's work in the sharded one
    (transfer summary + local pass; the shards run in parallel), simulated in one process.
    Returns the summary's cost relative to the local pass (largest over ``workers``)."""
    from serket_pyro.ops.forward_backward import forward_backward
    from serket_pyro.ops.sharded_forward_backward import shard_forward_backward, transfer_summary

    rng = np.random.default_rng(seed)
    A = np.log(rng.dirichlet(np.ones(K), size=K))
    li, lo = np.full(K, -np.log(K)), rng.normal(size=(T, K))
    ratio = 0.0
    t0 = time.perf_counter()
    ref = forward_backward(li, A, lo)
    full = time.perf_counter() - t0
    print(f"\nforward-backward, T = {T:,} steps, K = {K}: unsharded {full:.2f} s")
    for W in workers:
        b = np.linspace(0, T, W + 1).astype(int)
        shards = [lo[x:y] for x, y in zip(b[:-1], b[1:])]
        t0 = time.perf_counter()
        summ = [transfer_summary(li, A, s, first=i == 0) for i, s in enumerate(shards)]
        t1 = time.perf_counter()
        res = [shard_forward_backward(li, A, s, summ, i) for i, s in enumerate(shards)]
        t2 = time.perf_counter()
        per = (t2 - t0) / W
        err = max(abs(r.log_likelihood - ref.log_likelihood) for r in res)
        print(f"  {W} shards: per shard {per:.3f} s (summary {(t1 - t0) / W:.3f} + local pass {(t2 - t1) / W:.3f}), "
              f"{full / per:.1f}x faster; |log-likelihood difference| {err:.1e}")
        ratio = max(ratio, (t1 - t0) / (t2 - t1))
    return ratio


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="mnist", choices=["tutorial", "mnist"])
    p.add_argument("--order", default="cyclic", choices=["data", "cyclic"])
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-only", action="store_true")
    p.add_argument("--fb-only", action="store_true", help="only the sharded forward-backward timing")
    p.add_argument("--model-n", type=int, nargs=2, default=[3000, 6000], help="two sizes for the per-point costs")
    p.add_argument("--model-epochs", type=int, default=5)
    p.add_argument("--bandwidth", type=float, default=1.25e9, help="bytes/s per worker link (10 Gbit/s)")
    p.add_argument("--latency", type=float, default=50e-6, help="seconds per message hop")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    summary_ratio = sharded_fb_timing()
    if args.fb_only:
        return
    if not args.model_only:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [run_torchrun(procs, args, tmp) for procs in (1, 2)]
        print("\n| processes | points | wall s / outer iter | CPU s / iter per rank | MB sent / iter per rank "
              "| accuracy |\n|---|---|---|---|---|---|")
        for r in rows:
            its = r["per_rank"]
            wall = np.mean([i["wall_s"] for i in its[0]])
            cpu = ", ".join(f"{np.mean([i['cpu_s'] for i in rk]):.1f}" for rk in its)
            mb = ", ".join(f"{np.mean([i['bytes_reduced'] for i in rk]) / 1e6:.2f}" for rk in its)
            print(f"| {r['processes']} | {r['n']} | {wall:.1f} | {cpu} | {mb} | {r['accuracy']:.4f} |")
    n0, n1 = args.model_n
    c0, c1 = module_costs(n0, args.model_epochs), module_costs(n1, args.model_epochs)
    print(f"\nper-module seconds of one outer iteration ({args.model_epochs} VAE epochs): n={n0}: "
          + ", ".join(f"{k} {v:.2f}" for k, v in c0.items()) + f"; n={n1}: "
          + ", ".join(f"{k} {v:.2f}" for k, v in c1.items()) + f"; transfer product / local pass {summary_ratio:.2f}")
    n_params = 2 * 784 * 128 + 128 * 2 * 18 + 18 * 128 + 2 * 128 + 2 * 18 + 784  # the built-in VAE's weights
    print(f"\nmodel, N = 1,000,000 pairs, {args.model_epochs} VAE epochs, {args.bandwidth / 1e9:.2f} GB/s, "
          f"{args.latency * 1e6:.0f} us per hop")
    print("| workers | VAE s | GMM s | MM s (its shard) | comm s | total s / outer iter | MB moved per worker |\n"
          "|---|---|---|---|---|---|---|")
    for W in (1, 8, 64):
        m = model(c0, c1, n0, n1, 1_000_000, W, args.model_epochs, args.bandwidth, args.latency, n_params,
                  summary_ratio=summary_ratio)
        print(f"| {W} | {m['vae_s']:.1f} | {m['gmm_s']:.1f} | {m['mm_s']:.1f} | {m['comm_s']:.2f} | "
              f"{m['total_s']:.1f} | {m['bytes'] / 1e6:.0f} |")


if __name__ == "__main__":
    main()
