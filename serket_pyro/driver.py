"""Running a whole connected graph: outer iterations, seed, progress bar, metrics log, checkpoints.

The tutorial style (``for i in range(5): vae1.update(); gmm1.update()``) needs none of this; the
:func:`fit` helper does the same loop bottom-up for any graph and adds what a long run needs.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings

import torch
from tqdm.auto import tqdm

from .module import Module, connected_modules, update_order
from .output import atomic_save_json, atomic_torch_save, atomic_write_bytes
from .rng_state import get_rng_state, set_rng_state
from .seed import set_seed
from .validation import check_positive_int

__all__ = ["falling_objectives", "fit", "save_checkpoint", "load_checkpoint", "latest_checkpoint"]

_CKPT_STATE = "state.pt"
_CKPT_INFO = "checkpoint.json"


def _graph_description(modules: list[Module]) -> list[dict]:
    return [
        {"name": m.name, "type": type(m).__name__, "config": m.get_config(),
         "children": [c.name for c in m.children]}
        for m in modules
    ]


def save_checkpoint(folder, modules: list[Module], iteration: int, history: list[dict]) -> str:
    """Write ``<folder>/iter_<iteration:03d>/`` with every module's state dict, the RNG states and
    the metrics history. Files are written atomically, the JSON last: a checkpoint without its JSON
    is incomplete and ignored by :func:`latest_checkpoint`."""
    path = os.path.join(os.fspath(folder), f"iter_{iteration:03d}")
    state = {f"{m.name}/{k}": v for m in modules for k, v in m.full_state_dict().items()}
    state.update({f"rng/{k}": v for k, v in get_rng_state().items()})
    atomic_torch_save(os.path.join(path, _CKPT_STATE), state)
    atomic_save_json(os.path.join(path, _CKPT_INFO),
                     {"iteration": iteration, "graph": _graph_description(modules), "history": history})
    return path


def latest_checkpoint(folder) -> str | None:
    """The newest complete checkpoint folder under ``folder``, or ``None``."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return None
    done = sorted(d for d in os.listdir(folder)
                  if d.startswith("iter_") and os.path.isfile(os.path.join(folder, d, _CKPT_INFO)))
    return os.path.join(folder, done[-1]) if done else None


def load_checkpoint(path, modules: list[Module]) -> tuple[int, list[dict]]:
    """Restore module states and RNG states from a checkpoint folder.

    Returns ``(iteration, history)``. Raises ``ValueError`` when the checkpoint was written by a
    different graph or is corrupt."""
    try:
        with open(os.path.join(path, _CKPT_INFO)) as f:
            info = json.load(f)
        state = torch.load(os.path.join(path, _CKPT_STATE), weights_only=True)
    except (OSError, json.JSONDecodeError, RuntimeError, EOFError) as e:
        raise ValueError(f"checkpoint {path} is corrupt or incomplete: {e}") from None
    names = [g["name"] for g in info["graph"]]
    if names != [m.name for m in modules]:
        raise ValueError(f"checkpoint {path} holds modules {names}, this graph has {[m.name for m in modules]}")
    for m in modules:
        prefix = m.name + "/"
        m.load_full_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        m.n_updates_ = info["iteration"] + 1
    set_rng_state({k[4:]: v for k, v in state.items() if k.startswith("rng/")})
    return info["iteration"], info["history"]


def falling_objectives(history: list[dict], names, rel_tol: float = 1e-2) -> list[str]:
    """Modules whose own objective fell in each of the last two outer iterations.

    Every module reports its objective in ``metrics_["objective"]`` (nats, higher is better: a
    GMM's collapsed log joint, a Markov model's or MLDA's log-likelihood, a VAE's ELBO).  A module
    is flagged when the objective fell at both of the last two iterations and by more than
    ``rel_tol`` of its magnitude in all: a sampler's noise rarely does that, a module that drives
    the system into a worse state does (e.g. a parent's message that keeps shrinking a class).

    Args:
        history: the records of :func:`fit`, oldest first (``record[name]["objective"]``).
        names: module names to check.
    Returns:
        one sentence per flagged module (empty: nothing fell).
    """
    if len(history) < 3:
        return []
    out = []
    for name in names:
        vals = [r.get(name, {}).get("objective") for r in history[-3:]]
        if any(v is None or not math.isfinite(v) for v in vals):
            continue
        a, b, c = vals
        if c < b < a and a - c > rel_tol * max(abs(a), 1.0):
            out.append(f"{name}: its objective fell in two outer iterations in a row ({a:.6g} -> {b:.6g} -> "
                       f"{c:.6g}); this module may be making the system worse (check the messages it receives)")
    return out


def fit(*modules: Module, n_iter: int = 5, seed: int | None = None, progress: bool = True,
        checkpoint_dir=None, resume: bool = False, callback=None, guard_tol: float = 1e-2) -> list[dict]:
    """Update every learnable module of the graph connected to ``modules``, bottom-up, ``n_iter`` times.

    Args:
        modules: any module(s) of the graph (the whole connected graph is run).
        n_iter: number of outer iterations (5 in every Serket tutorial).
        seed: seeds python, numpy, torch and Pyro first (ignored when resuming: the checkpoint's
            RNG state is restored instead).
        progress: show a progress bar over outer iterations and modules.
        checkpoint_dir: if given, a checkpoint is written after every outer iteration
            (see :func:`save_checkpoint`) and ``metrics.jsonl`` gets one line per iteration.
        resume: continue from the latest complete checkpoint in ``checkpoint_dir``, if any.
        callback: called as ``callback(iteration, record)`` after each outer iteration.
        guard_tol: a module whose own objective (``metrics_["objective"]``) fell in each of the last
            two outer iterations, by more than this fraction in all, is named in the record's
            ``"flags"`` and a ``RuntimeWarning`` (:func:`falling_objectives`).

    Returns:
        history: one record per outer iteration: ``{"iteration", "seconds", "<module name>": metrics}``
        and ``"flags"`` when a module's objective fell two iterations in a row.
    """
    n_iter = check_positive_int(n_iter, "n_iter", "fit")
    if not modules:
        raise ValueError("fit() needs at least one module of the graph")
    order = update_order(*modules)
    if not order:
        raise ValueError("the graph has no learnable module to update")
    for m in order:
        if not m.children:
            raise ValueError(f"{m.name} has no children: connect it before fitting")
    allm = [m for m in connected_modules(*modules) if m.learnable]

    start, history = 0, []
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir")
        ckpt = latest_checkpoint(checkpoint_dir)
        if ckpt is not None:
            last, history = load_checkpoint(ckpt, allm)
            start = last + 1
    if start == 0:
        set_seed(seed)

    bar = tqdm(total=(n_iter - start) * len(order), disable=not progress, desc="serket", unit="update")
    try:
        for it in range(start, n_iter):
            t0 = time.perf_counter()
            record = {"iteration": it}
            for m in order:
                bar.set_postfix_str(f"iter {it + 1}/{n_iter} {m.name}")
                m.update()
                if m.metrics_:
                    record[m.name] = dict(m.metrics_)
                bar.update(1)
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            flags = falling_objectives(history, [m.name for m in order], guard_tol)
            if flags:
                record["flags"] = flags
                for f in flags:
                    warnings.warn(f, RuntimeWarning, stacklevel=2)
            if checkpoint_dir is not None:
                save_checkpoint(checkpoint_dir, allm, it, history)
                # rewritten whole from the history, so a resumed run has every line
                atomic_write_bytes(os.path.join(os.fspath(checkpoint_dir), "metrics.jsonl"),
                                   "".join(json.dumps(r) + "\n" for r in history).encode())
            if callback is not None:
                callback(it, record)
    finally:
        bar.close()
    return history
