"""The ``serket-pyro`` command.

    serket-pyro run vae_gmm_mm                 # the VAE+GMM+MM tutorial with its settings
    serket-pyro run vae_gmm --n 300 --epochs 2 --iterations 2
    serket-pyro run vae_gmm_mm --checkpoint-dir ckpt --resume   # continue an interrupted run
    serket-pyro run vae_gmm_mlda_mm --save trained              # save the trained graph (no pickle)
    serket-pyro run vae_gmm --data x.npy --category y.txt --no-deskew   # your own data
    serket-pyro recog trained --data mnist-test --output rec    # recognise new data, parameters frozen
    serket-pyro report rec                     # PNG plots in rec/report and a one-screen summary
    serket-pyro joint --mm --init modules      # VAE+GMM+MM fitted jointly as one Pyro program
    serket-pyro export-tutorial-data DIR       # data.txt, data1.txt, data2.txt, category.txt
    serket-pyro -q run vae_gmm                 # warnings and the summary only; -v adds debug notes

Exit status 0 on success; on a user error, 2 and the whole message on stderr.  The results go to
stdout; the ``serket_pyro`` logger's messages (progress notes, warnings) go to stderr.  torch, pyro
and numpy are imported by the commands, not for ``--help`` or ``--version``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from .arguments import SYSTEMS, add_joint_arguments, add_tutorial_arguments, positive_int

__all__ = ["main"]


class _UsageError(Exception):
    """A flag argparse refuses (reported like every other user error: one message, exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _cmd_run(args) -> int:
    from .runner import format_summary, run_system

    from .. import distributed

    try:
        system, seconds, source = run_system(args.model, args)
        if distributed.rank() == 0:
            print(format_summary(system, seconds, source))
    finally:
        if getattr(args, "distributed", False):
            distributed.destroy_process_group()
    return 0


def _cmd_recog(args) -> int:
    from .runner import format_summary, recognise

    system, seconds, source = recognise(args.folder, args)
    print(format_summary(system, seconds, source))
    return 0


def _cmd_joint(args) -> int:
    from .joint_run import run_joint

    from .. import distributed

    try:
        lines = run_joint(args)["lines"]
        if distributed.rank() == 0:
            print("\n".join(lines))
    finally:
        if getattr(args, "distributed", False):
            distributed.destroy_process_group()
    return 0


def _cmd_report(args) -> int:
    from ..persistence import GRAPH_FILE
    from .plots import make_report

    folder, out = args.folder, args.out
    if os.path.lexists(os.path.join(folder, GRAPH_FILE)):  # a saved graph: report its training outputs
        from ..persistence import read_graph_info

        outs = {os.path.dirname(e["output_dir"]) for e in read_graph_info(folder)["modules"]
                if isinstance(e.get("output_dir"), str)}
        if len(outs) != 1:
            raise ValueError(f"{folder}: the saved modules wrote to several folders {sorted(outs)}; report one of them")
        if out is None:  # never where the (possibly received) graph.json points: next to it
            out = os.path.join(folder, "report")
        folder = outs.pop()
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder")
    _, text = make_report(folder, out, args.checkpoint_dir)
    print(text)
    return 0


def _cmd_export(args) -> int:
    """Write the tutorial's text files so the tutorial code (``np.loadtxt("data1.txt")``) runs."""
    import numpy as np

    from .. import datasets
    from ..output import atomic_savetxt
    from .runner import require_data_file

    require_data_file(args.data_dir, "serket_tutorial.npz")
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


def _add_verbosity(parser: argparse.ArgumentParser, default) -> None:
    """``-q`` / ``-v``, accepted before the command and after it (a subcommand's copy has no default
    of its own, so it does not overwrite what was given before the command)."""
    parser.add_argument("-q", "--quiet", action="store_true", default=default if default is argparse.SUPPRESS
                        else False, help="only warnings, errors and the results; no progress bars")
    parser.add_argument("-v", "--verbose", action="count", default=default if default is argparse.SUPPRESS
                        else 0, help="also the library's debug notes (per-iteration timings)")


def configure_logging(quiet: bool = False, verbose: int = 0) -> logging.Handler:
    """Show the ``serket_pyro`` logger's messages on stderr: WARNING and up with ``quiet``, INFO by
    default, DEBUG with ``verbose``.

    Returns
    -------
    logging.Handler
        The handler added to the ``serket_pyro`` logger (:func:`main` removes it and restores the
        level when the command ends, so that calling ``main`` in a process leaves logging as it was).
    """
    log = logging.getLogger("serket_pyro")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s" if verbose else "%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="serket-pyro", description="Serket cognitive models in Pyro")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_verbosity(parser, None)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train one of the Serket tutorial systems")
    run.add_argument("model", choices=sorted(SYSTEMS), help="which tutorial system")
    add_tutorial_arguments(run)
    run.add_argument("--resume", action="store_true",
                     help="continue from the latest complete checkpoint in --checkpoint-dir (same results as an "
                          "uninterrupted run)")
    run.add_argument("--speech", choices=("tutorial", "ours"), default="tutorial",
                     help="the speech modality: the tutorial's HAC histograms (default), or 'ours': HAC computed by "
                          "this package from the same utterances' MFCC, codebooks saved with the graph so that "
                          "recog takes raw speech")
    run.add_argument("--save", default=None, metavar="FOLDER",
                     help="save the trained graph there (graph.json + state.pt) for `serket-pyro recog`")
    run.add_argument("--data", action="append", default=None, metavar="PATH",
                     help="your own data instead of the tutorial's (.npy, single-array .npz or text): first the "
                          "VAE's input (N x D in [0, 1] or 8-bit), then, for the MLDA systems, the speech counts "
                          "(N x V); with --no-deskew unless the points are square images")
    run.add_argument("--category", default=None, metavar="PATH",
                     help="true labels (N integers) of --data, to score the classes")
    run.add_argument("--distributed", action="store_true",
                     help="data-parallel over the processes torchrun starts (torchrun --nproc_per_node N -m "
                          "serket_pyro run ... --distributed): each process keeps its block of the data, rank 0 "
                          "writes the files; in one process an ordinary run")
    run.set_defaults(func=_cmd_run)
    rec = sub.add_parser("recog", help="recognise new data with a saved graph (learned parameters frozen)")
    rec.add_argument("folder", help="a saved graph (run --save FOLDER, or srk save_graph)")
    rec.add_argument("--data", action="append", required=True, metavar="SPEC",
                     help="mnist-test | tutorial | sad-test | [KEY=]PATH (.npy, .npz, .txt), once per observation in "
                          "order; an observation read only by MLDA may be left out (missing modality). A speech "
                          "observation of a graph trained with --speech ours takes raw speech: a folder of .wav "
                          "files, a .wav, a .txt list of wav files, an .npz of MFCC 'frames' + 'lengths', or "
                          "sad-test (UCI Spoken Arabic Digit test speakers)")
    rec.add_argument("--category", default=None, metavar="PATH", help="true labels of the data, to score")
    rec.add_argument("--order", choices=("given", "cyclic"), default="given",
                     help="cyclic: reorder the points to the tutorials' label cycle 0..9 using the labels (what a "
                          "Markov model learned; the order then carries the labels, so the score is not fair)")
    rec.add_argument("--exclude", action="append", default=None, metavar="MODULE",
                     help="leave a top module out, e.g. --exclude mm for points in an unrelated order")
    rec.add_argument("--n", type=positive_int, default=None, help="use only the first N points (after ordering)")
    rec.add_argument("--iterations", type=positive_int, default=2, help="outer iterations of message passing")
    rec.add_argument("--data-dir", default=None, help="folder of mnist.npz / serket_tutorial.npz")
    rec.add_argument("--output", default=".", help="folder for the module%%03d_* output folders")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--threads", type=positive_int, default=1)
    rec.add_argument("--no-progress", action="store_true")
    rec.set_defaults(func=_cmd_recog)
    joint = sub.add_parser("joint", help="VAE+GMM (--mm: +MM) fitted jointly as one Pyro program, then handed back "
                                         "to the modules")
    add_joint_arguments(joint)
    joint.set_defaults(func=_cmd_joint)
    rep = sub.add_parser("report", help="plots (PNG) and a summary table of a run's output folder")
    rep.add_argument("folder", help="the --output folder of a run or recog (or a saved graph)")
    rep.add_argument("--out", default=None, help="folder for the PNG files (default FOLDER/report, also for a "
                                                  "saved graph)")
    rep.add_argument("--checkpoint-dir", default=None, help="read metrics.jsonl there (default: from run.json)")
    rep.set_defaults(func=_cmd_report)
    exp = sub.add_parser("export-tutorial-data", help="write the tutorial's data*.txt and category.txt")
    exp.add_argument("folder", nargs="?", default=".")
    exp.add_argument("--data-dir", default=None)
    exp.set_defaults(func=_cmd_export)
    for p in (run, rec, joint, rep, exp):
        _add_verbosity(p, argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    log = logging.getLogger("serket_pyro")
    level, handler = log.level, None
    try:
        args = build_parser().parse_args(argv)
        handler = configure_logging(args.quiet, args.verbose)
        if args.quiet and hasattr(args, "no_progress"):
            args.no_progress = True
        return args.func(args)
    except (_UsageError, ValueError, FileNotFoundError, OSError) as e:
        print(f"serket-pyro: error: {str(e) or type(e).__name__}", file=sys.stderr)  # whole: advice follows
        return 2
    except KeyboardInterrupt:
        print("serket-pyro: interrupted (files already written are complete)", file=sys.stderr)
        return 130
    finally:
        if handler is not None:
            log.removeHandler(handler)
            log.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
