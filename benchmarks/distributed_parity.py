"""Do 1 and 2 processes give the same results in distribution?  The small-data check of the
data-parallel fit (README "Beyond one machine"), the whole system and each exchange alone.

Each step runs in one process (``python``) or two (``torchrun --nproc_per_node 2``), the same
command; rank 0 prints and writes ``--json``:

``system``
    VAE+GMM+MM on the first ``--n-points`` tutorial points (``--deskew`` as ``examples/distributed.py``),
    ``--iterations`` outer iterations of ``--epochs`` VAE epochs, for each of ``--seeds``: the
    GMM's accuracy, the VAE's loss and the Markov model's evidence model after every iteration.
    Each run's files stay under ``--output`` (``w<processes>_s<seed>``) for the steps below.
``gmm-mm``
    GMM+MM alone on the latents that ``system`` wrote after its first iteration (under ``--src``;
    of its one-process runs, or of its two-process ones with ``--latents-of 2``), ``--gmm-seeds``
    per latent set: the class and chain exchange without the VAE (with ``--iterations 1``, in one
    process, on both runs' latents: how the first iteration's latents differ).
``vae-prior``
    One VAE update (``--epochs``) from the networks that ``system`` in one process had after its
    first iteration, under the fixed prior message of that iteration's GMM (moment-matched
    mixture, as the GMM sends): the ELBO under that prior on all points and the accuracy of that
    GMM on the new latents.  The VAE's data-parallel training with a parent.
``compare A.json B.json``
    Paired table of two ``system`` (or ``gmm-mm`` / ``vae-prior``) files, and the sign test.

Example (the README's numbers)::

    python benchmarks/distributed_parity.py system --deskew --seeds 0 1 2 --json s1.json --output par
    torchrun --nproc_per_node 2 benchmarks/distributed_parity.py system --deskew --seeds 0 1 2 --json s2.json --output par
    python benchmarks/distributed_parity.py compare s1.json s2.json
"""

import argparse
import json
import math
import os

import numpy as np
import torch

import serket_pyro as srk
from serket_pyro import distributed, gmm, mm, vae
from serket_pyro.messages import GaussianMessage
from serket_pyro.metrics import accuracy


def module_folder(run, kind):
    """The folder of the run's ``kind`` module (``module00k_<kind>``), its first iteration."""
    names = [d for d in os.listdir(run) if d.endswith("_" + kind)] if os.path.isdir(run) else []
    if len(names) != 1:
        raise SystemExit(f"{run}: no single *_{kind} folder (run the system step in one process first)")
    return os.path.join(run, names[0], "000")


def tutorial_points(n):
    from serket_pyro.app.runner import load_inputs

    images, _, labels, _ = load_inputs(None, None)
    return np.asarray(images)[:n], np.asarray(labels)[:n]


def run_system(args, rank, world):
    images, labels = tutorial_points(args.n)
    res = {}
    for s in args.seeds:
        srk.reset_module_counter()
        srk.set_output_root(os.path.join(args.output, f"w{world}_s{s}"))
        v = vae.VAE(args.latent_dim, itr=args.epochs, batch_size=args.batch_size, progress=False,
                    deskew=args.deskew)
        g = gmm.GMM(10, category=labels)
        m = mm.MarkovModel()
        v.connect(srk.Observation(images))
        g.connect(v)
        m.connect(g)
        trace = []

        def record(it, rec):
            trace.append({"accuracy": g.metrics_["accuracy"], "vae_loss": v.loss_history_[-1],
                          "gmm_objective": g.metrics_["objective"],
                          **{k: m.metrics_.get(k) for k in ("confusion_model", "evidence_noise", "log_likelihood")}})
        srk.fit(v, g, m, n_iter=args.iterations, seed=s, progress=False, distributed=True, callback=record)
        # the first iteration's chain: did it take the class evidence mostly for noise?
        res[str(s)] = {"final": trace[-1]["accuracy"], "trace": trace, "evidence_noise": [trace[0]["evidence_noise"]]}
        if rank == 0:
            print(f"seed {s}: " + " | ".join(f"acc {t['accuracy']:.3f} vae {t['vae_loss']:.1f} evidence "
                                            f"{'confusion' if t['confusion_model'] else 'noise'} "
                                            f"{t['evidence_noise']:.2f}" for t in trace), flush=True)
    return res


def run_gmm_mm(args, rank, world):
    _, labels = tutorial_points(args.n)
    res = {}
    for s in args.seeds:
        run = os.path.join(args.src, f"w{args.latents_of}_s{s}")
        z = np.loadtxt(os.path.join(module_folder(run, "vae"), "z_learn.txt"))
        accs, noise = [], []
        for gs in args.gmm_seeds:
            srk.reset_module_counter()
            srk.set_output_root(os.path.join(args.output, f"gmm_mm_w{world}"))
            g = gmm.GMM(10, category=labels[: len(z)])
            m = mm.MarkovModel()
            g.connect(srk.Observation(z))
            m.connect(g)
            srk.fit(g, m, n_iter=args.iterations, seed=gs, progress=False, distributed=True)
            accs.append(g.metrics_["accuracy"])
            noise.append(m.metrics_["evidence_noise"])
        res[str(s)] = {"final": float(np.mean(accs)), "runs": accs, "evidence_noise": noise}
        if rank == 0:
            print(f"latents of seed {s}: accuracy {np.mean(accs):.3f} {[round(a, 3) for a in accs]}, the chain's "
                  f"evidence noise {[round(e, 2) for e in noise]}", flush=True)
    return res


def run_vae_prior(args, rank, world):
    images, labels = tutorial_points(args.n)
    N = len(images)
    a, b = distributed.shard_bounds(N, world, rank)
    res = {}
    for s in args.seeds:
        src = os.path.join(args.src, f"w1_s{s}")
        srk.reset_module_counter()
        srk.set_output_root(os.path.join(args.output, f"vae_prior_w{world}"))
        ref = vae.VAE(args.latent_dim, progress=False, deskew=args.deskew)
        ref.connect(srk.Observation(images))
        ref.load_model(module_folder(src, "vae"))
        x, _ = ref._read_inputs()
        with torch.no_grad():
            loc0 = ref.encoder_(x)[0].double()
        g = gmm.GMM(10)
        g.connect(srk.Observation(loc0.numpy()))
        g.load_model(module_folder(src, "gmm"))
        r = g.class_log_posterior(loc0).exp()  # the message the GMM sends (without the chain's)
        ploc = r @ g.means_
        var = r @ g.covariances_.diagonal(dim1=-2, dim2=-1) + (r.unsqueeze(-1) * (g.means_ - ploc.unsqueeze(-2))
                                                               .pow(2)).sum(-2)
        v = vae.VAE(args.latent_dim, itr=args.epochs, batch_size=args.batch_size, progress=False,
                    deskew=args.deskew)
        v.connect(srk.Observation(images[a:b]))  # this process's rows (all in one process)
        v.load_model(module_folder(src, "vae"))
        v.mode = "learn"
        v.set_backward_msg(GaussianMessage(ploc[a:b], var[a:b].sqrt()))
        srk.fit(v, n_iter=1, seed=1000 + s, progress=False, distributed="shards" if world > 1 else False)
        torch.manual_seed(0)
        with torch.no_grad():
            elbo = float(np.mean([float(v.analytic_loss(x, ploc.float(), var.sqrt().float())) for _ in range(20)]))
            acc = float(accuracy(labels, g.class_log_posterior(v.encoder_(x)[0].double()).argmax(-1).numpy()))
        res[str(s)] = {"final": acc, "loss_under_prior": elbo}
        if rank == 0:
            print(f"state of seed {s}: loss under the prior {elbo:.3f} nats, that GMM's accuracy {acc:.3f}", flush=True)
    return res


def compare(a_path, b_path):
    with open(a_path) as f:
        a = json.load(f)
    with open(b_path) as f:
        b = json.load(f)
    seeds = [s for s in a if s in b]
    da = [a[s]["final"] for s in seeds]
    db = [b[s]["final"] for s in seeds]
    print(f"{'seed':>5} {os.path.basename(a_path):>12} {os.path.basename(b_path):>12}")
    for s, x, y in zip(seeds, da, db):
        print(f"{s:>5} {x:12.3f} {y:12.3f}")
    noisy = [sum(e > 0.6 for s in seeds for e in d[s].get("evidence_noise", [])) for d in (a, b)]
    if any(noisy):  # the chain's evidence model called the class evidence mostly noise
        print(f"runs whose Markov model took the evidence for noise (eps > 0.6): {noisy[0]}, {noisy[1]}")
    lower = sum(y < x - 0.005 for x, y in zip(da, db))
    higher = sum(y > x + 0.005 for x, y in zip(da, db))
    n = lower + higher
    # two-sided sign test over the pairs that differ by more than 0.005
    k = max(lower, higher)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n) if n else 1.0
    print(f"mean {np.mean(da):.4f} {np.mean(db):.4f} (sd {np.std(da):.3f} {np.std(db):.3f}); second lower on "
          f"{lower}, higher on {higher} of {len(seeds)} (sign test p = {p:.3f})")
    return {"mean": (float(np.mean(da)), float(np.mean(db))), "lower": lower, "higher": higher, "p": p}


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["system", "gmm-mm", "vae-prior", "compare"])
    p.add_argument("files", nargs="*", help="compare: the two JSON files")
    p.add_argument("--n-points", dest="n", type=int, default=1000,
                   help="first N tutorial points (not --n: torchrun's own --n... flags make it ambiguous)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--gmm-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--latent-dim", type=int, default=18)
    p.add_argument("--deskew", action="store_true", help="the VAE deskews the images (examples/distributed.py's default)")
    p.add_argument("--output", default="parity", help="folder of the runs' files")
    p.add_argument("--src", default=None, help="gmm-mm, vae-prior: the --output of the system runs")
    p.add_argument("--latents-of", type=int, default=1, choices=[1, 2],
                   help="gmm-mm: the latents of the system run on 1 or 2 processes (w1_s* or w2_s*)")
    p.add_argument("--json", default=None)
    return p


def main(args):
    if args.step == "compare":
        if len(args.files) != 2:
            raise SystemExit("compare takes two JSON files")
        return compare(*args.files)
    torch.set_num_threads(1)
    rank, world = distributed.init_process_group()
    args.src = args.output if args.src is None else args.src
    res = {"system": run_system, "gmm-mm": run_gmm_mm, "vae-prior": run_vae_prior}[args.step](args, rank, world)
    if rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump(res, f)
    distributed.destroy_process_group()
    return res


if __name__ == "__main__":
    main(parser().parse_args())
