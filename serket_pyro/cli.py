"""The ``serket-pyro`` command.

    serket-pyro run vae_gmm_mm                 # the VAE+GMM+MM tutorial with its settings
    serket-pyro run vae_gmm --n 300 --epochs 2 --iterations 2
    serket-pyro export-tutorial-data DIR       # data.txt, data1.txt, data2.txt, category.txt

Exit status 0 on success; on a user error, 2 and a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .runner import SYSTEMS, add_tutorial_arguments, format_summary, run_system

__all__ = ["main"]


def _cmd_run(args) -> int:
    system, seconds, source = run_system(args.model, args)
    print(format_summary(system, seconds, source))
    return 0


def _cmd_export(args) -> int:
    """Write the tutorial's text files so the tutorial code (``np.loadtxt("data1.txt")``) runs."""
    from . import datasets
    from .output import atomic_savetxt

    d = datasets.load_tutorial(root=args.data_dir)
    os.makedirs(args.folder, exist_ok=True)
    images = np.asarray(d.images, dtype=np.float64)
    if images.max() > 1:
        images = images / 255.0
    for name in ("data.txt", "data1.txt"):
        atomic_savetxt(os.path.join(args.folder, name), images, fmt="%.6g")
    atomic_savetxt(os.path.join(args.folder, "data2.txt"), np.asarray(d.hac), fmt="%d")
    atomic_savetxt(os.path.join(args.folder, "category.txt"), np.asarray(d.category), fmt="%d")
    print(f"wrote data.txt, data1.txt (images / 255), data2.txt (HAC counts), category.txt to {args.folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serket-pyro", description="Serket cognitive models in Pyro")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train one of the Serket tutorial systems")
    run.add_argument("model", choices=sorted(SYSTEMS), help="which tutorial system")
    add_tutorial_arguments(run)
    run.set_defaults(func=_cmd_run)
    exp = sub.add_parser("export-tutorial-data", help="write the tutorial's data*.txt and category.txt")
    exp.add_argument("folder", nargs="?", default=".")
    exp.add_argument("--data-dir", default=None)
    exp.set_defaults(func=_cmd_export)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"serket-pyro: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("serket-pyro: interrupted (files already written are complete)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
