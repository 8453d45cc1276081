"""The GPU table of issue 19 in one command: the tutorial systems and the full-MNIST joint recipe,
seconds and accuracy against the targets.

    python benchmarks/gpu.py                      # on cuda, the targets' sizes (under 5 minutes on an H200)
    python benchmarks/gpu.py --device cpu --tiny  # the same pipeline on a few hundred images (a check)

Each row runs one existing benchmark script in a fresh process (so each pays its own start-up,
as a user does) and reads its JSON record:

* ``vae_gmm_mm``: ``benchmarks/tutorials.py --systems vae_gmm_mm`` (target: under 8 s);
* ``vae_gmm_mlda_mm``: ``benchmarks/tutorials.py --systems vae_gmm_mlda_mm``;
* ``joint full MNIST``: the README's full-MNIST joint recipe, ``benchmarks/joint.py --data mnist
  ...`` (target: accuracy >= 0.97 in under 30 s).

Prints a markdown table: row, seconds (the run's own timer), accuracy, target, whether it is met.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

JOINT_RECIPE = ["--data", "mnist", "--arch", "vade", "--latent-dim", "10", "--batch-size", "256",
                "--pretrain-epochs", "20", "--pretrain-kl-weight", "0", "--pretrain-neighbour-weight", "10",
                "--neighbours", "10", "--covariance", "full", "--init", "gmm", "--epochs", "10", "--eval-every", "1",
                "--skip-mp"]
TINY_TUTORIAL = ["--n", "200", "--epochs", "1", "--iterations", "1"]
TINY_JOINT = ["--data", "tutorial", "--n", "200", "--latent-dim", "4", "--batch-size", "100",
              "--pretrain-epochs", "1", "--epochs", "1", "--eval-every", "1", "--skip-mp"]


def rows(device: str, tiny: bool, seed: int):
    """``(name, command, target seconds, target accuracy)`` of each row."""
    tut = TINY_TUTORIAL if tiny else []
    common = ["--device", device, "--seeds", str(seed)]
    return [
        ("vae_gmm_mm", [os.path.join(HERE, "tutorials.py"), "--systems", "vae_gmm_mm", *tut, *common], 8.0, None),
        ("vae_gmm_mlda_mm", [os.path.join(HERE, "tutorials.py"), "--systems", "vae_gmm_mlda_mm", *tut, *common],
         None, None),
        ("joint full MNIST", [os.path.join(HERE, "joint.py"), *(TINY_JOINT if tiny else JOINT_RECIPE), *common],
         30.0, 0.97),
    ]


def run_row(cmd: list[str], out_dir: str, name: str, timeout: float) -> dict:
    path = os.path.join(out_dir, name.replace(" ", "_") + ".json")
    args = [sys.executable, *cmd, "--json", path]
    if "tutorials.py" in cmd[0]:
        args += ["--output", os.path.join(out_dir, "runs")]
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{name}: {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    with open(path) as f:
        rec = json.load(f)[0]
    return {"seconds": float(rec["seconds"]), "accuracy": float(rec["accuracy"]), "process_seconds": wall}


def main(args=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a few hundred images, one epoch: checks the pipeline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per row")
    p.add_argument("--only", nargs="*", default=None, help="row names to run (default all)")
    a = p.parse_args(args)
    table = []
    with tempfile.TemporaryDirectory() as out:
        for name, cmd, t_sec, t_acc in rows(a.device, a.tiny, a.seed):
            if a.only and name not in a.only:
                continue
            r = run_row(cmd, out, name, a.timeout)
            met = (t_sec is None or r["seconds"] < t_sec) and (t_acc is None or r["accuracy"] >= t_acc)
            target = " and ".join(x for x in (f"< {t_sec:g} s" if t_sec else "",
                                               f">= {t_acc:g}" if t_acc else "") if x) or "-"
            table.append((name, r["seconds"], r["process_seconds"], r["accuracy"], target, met))
            print(f"{name}: {r['seconds']:.1f} s ({r['process_seconds']:.1f} s with start-up), "
                  f"accuracy {r['accuracy']:.3f}", flush=True)
    print(f"\ndevice {a.device}{' (tiny sizes)' if a.tiny else ''}, seed {a.seed}\n")
    print("| row | seconds | with start-up | accuracy | target | met |")
    print("|---|---|---|---|---|---|")
    for name, sec, wall, acc, target, met in table:
        print(f"| {name} | {sec:.1f} | {wall:.1f} | {acc:.3f} | {target} | {'yes' if met else 'no'} |")
    return table


if __name__ == "__main__":
    main()
