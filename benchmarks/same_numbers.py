"""Fingerprint of short runs of the four tutorial systems, to check that a refactoring keeps the
numbers bit for bit.

    python benchmarks/same_numbers.py --out before.npz            # on the old code
    python benchmarks/same_numbers.py --out after.npz --compare before.npz

Each system is built by :mod:`serket_pyro.app.runner` on the first ``--n`` tutorial points, fitted
for ``--iterations`` outer iterations with ``--epochs`` VAE epochs and seed ``--seed``, saved with
``srk.save_graph`` and recognised again from the saved graph.  Recorded: the accuracies, every
learned state tensor (GMM means, MLDA topics, Markov transitions, VAE weights), every message and
the SHA-256 of every output file (learning and recognition).  ``--compare`` prints every
difference and exits with status 1 if there is one.
"""

import argparse
import hashlib
import os
import sys
import tempfile

import numpy as np
import torch

import serket_pyro as srk
from serket_pyro.app.runner import SYSTEMS, build_system, load_inputs


def _files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for n in names:
            p = os.path.join(folder, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def run(name, args, images, speech, category, tmp):
    rec = {}
    srk.reset_module_counter()
    root = os.path.join(tmp, name)
    srk.set_output_root(os.path.join(root, "learn"))
    srk.set_seed(args.seed)
    system = build_system(name, images, speech, category, args)
    system.fit(n_iter=args.iterations, seed=args.seed, progress=False)
    rec["accuracy"] = np.array([h[system.result_module.name]["accuracy"] for h in system.history])
    for key, m in system.modules.items():
        for k, v in m.full_state_dict().items():
            rec[f"{key}/{k}"] = v.detach().cpu().numpy()
    srk.save_graph(os.path.join(root, "saved"), system)
    srk.set_seed(args.seed + 1)
    obs = {k: v for k, v in (("obs", images), ("obs1", images), ("obs2", speech)) if k in system.modules}
    loaded = srk.load_graph(os.path.join(root, "saved"), obs, mode="recog", category=category,
                            output_root=os.path.join(root, "recog"))
    loaded.fit(n_iter=1, seed=args.seed + 1, progress=False)
    rec["recog_accuracy"] = np.array([loaded.result_module.metrics_.get("accuracy", np.nan)])
    for key, m in loaded.modules.items():
        if m.forward_msg is not None:
            rec[f"recog/{key}/forward"] = np.asarray(m.forward_msg.numpy())
    files = _files(os.path.join(root, "learn"))
    files.update({f"recog/{k}": v for k, v in _files(os.path.join(root, "recog")).items()})
    return rec, files


def main(args):
    torch.set_num_threads(1)
    images, speech, category, _ = load_inputs(args.data_dir, args.n, offline_fallback=False)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.systems:
            rec, files = run(name, args, images, speech, category, tmp)
            print(f"{name}: accuracy per iteration {np.round(rec['accuracy'], 4).tolist()}, "
                  f"recognition {rec['recog_accuracy'][0]:.4f}, {len(files)} files", flush=True)
            out.update({f"{name}/{k}": v for k, v in rec.items()})
            out.update({f"{name}/file/{k}": np.array(v) for k, v in files.items()})
    np.savez(args.out, **out)
    if args.compare:
        ref = dict(np.load(args.compare))
        bad = 0
        for k in sorted(set(ref) | set(out)):
            if k not in out or k not in ref:
                print(f"only in {'reference' if k in ref else 'this run'}: {k}")
                bad += 1
            elif ref[k].shape != np.asarray(out[k]).shape or not np.array_equal(ref[k], out[k]):
                print(f"differs: {k}")
                bad += 1
        print(f"{len(set(ref) & set(out))} entries compared, {bad} differences")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--deskew", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--compare", default=None)
    sys.exit(main(p.parse_args()))
