"""Running a whole connected graph: outer iterations, seed, progress bar, metrics log, checkpoints.

The tutorial style (``for i in range(5): vae1.update(); gmm1.update()``) needs none of this; the
:func:`fit` helper does the same loop bottom-up for any graph and adds what a long run needs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import warnings

from tqdm.auto import tqdm

from . import distributed as _dist
from .module import Module, Observation, connected_modules, update_order
from .output import atomic_save_json, atomic_write_bytes, get_run_id, set_run_id
from .rng_state import get_rng_state, set_rng_state
from .safe_files import read_json, read_tensor_file, resolve_inside, safe_name, tensor_file_bytes
from .seed import set_seed
from .validation import check_positive_int

__all__ = ["falling_objectives", "fit", "fit_sharded", "save_checkpoint", "load_checkpoint", "latest_checkpoint"]

_log = logging.getLogger(__name__)

_CKPT_STATE = "state.pt"
_CKPT_INFO = "checkpoint.json"


def _graph_description(modules: list[Module]) -> list[dict]:
    return [
        {"name": m.name, "type": type(m).__name__, "config": m.get_config(),
         "children": [c.name for c in m.children]}
        for m in modules
    ]


#: config entries that may differ between a checkpoint and the run resuming it
_FREE_CONFIG = ("device", "progress")
_CKPT_DIR = re.compile(r"iter_(\d+)")


def save_checkpoint(folder, modules: list[Module], iteration: int, history: list[dict],
                    settings: dict | None = None) -> str:
    """Write a checkpoint of ``modules`` after outer iteration ``iteration``.

    Parameters
    ----------
    folder : str or os.PathLike
        The checkpoint folder; the checkpoint goes to ``<folder>/iter_<iteration:03d>/``.
    modules : list of Module
        The learnable modules of the graph.
    iteration : int
        The outer iteration just finished.
    history : list of dict
        The metrics history so far.
    settings : dict, optional
        The run's settings (JSON values, e.g. ``{"--epochs": 200, "--seed": 0}``), compared by
        :func:`load_checkpoint` when resuming.

    Returns
    -------
    str
        The checkpoint's folder.

    Notes
    -----
    ``state.pt`` holds every module's state dict, the messages and the RNG states;
    ``checkpoint.json`` the iteration, the graph (names, classes, configs), the settings, the
    history and the size and SHA-256 of ``state.pt``.  Both are written atomically, the JSON
    last: a checkpoint without its JSON is incomplete and ignored by :func:`latest_checkpoint`.
    """
    for m in modules:
        safe_name(m.name, "module name", "save_checkpoint()")
    path = os.path.join(os.fspath(folder), f"iter_{iteration:03d}")
    state = {f"{m.name}/{k}": v for m in modules for k, v in m.full_state_dict().items()}
    state.update({f"rng/{k}": v for k, v in get_rng_state().items()})
    data, record = tensor_file_bytes(state)
    atomic_write_bytes(os.path.join(path, _CKPT_STATE), data)
    atomic_save_json(os.path.join(path, _CKPT_INFO),
                     {"iteration": iteration, "graph": _graph_description(modules), "history": history,
                      "settings": settings, "run_id": get_run_id(), **record})
    return path


def latest_checkpoint(folder) -> str | None:
    """The newest complete checkpoint folder under ``folder``, or ``None``.

    Parameters
    ----------
    folder : str or os.PathLike
        A checkpoint folder (``iter_<n>`` subfolders).

    Returns
    -------
    str or None
        ``<folder>/iter_<n>`` with the largest ``n`` (compared as numbers: ``iter_1000`` is
        newer than ``iter_999``) that holds a ``checkpoint.json``.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return None
    done = [(int(m.group(1)), d) for d in os.listdir(folder) if (m := _CKPT_DIR.fullmatch(d))
            and os.path.isfile(os.path.join(folder, d, _CKPT_INFO))]
    return os.path.join(folder, max(done)[1]) if done else None


def _differences(info: dict, modules: list[Module], settings: dict | None) -> list[str]:
    """What differs between a checkpoint's recorded run and this one, in words."""
    out = []
    saved = info.get("settings") or {}
    if settings is not None:
        for k in sorted(set(saved) | set(settings)):
            if k in saved and k in settings and saved[k] != settings[k]:
                out.append(f"{k} was {saved[k]!r}, this run has {settings[k]!r}")
    for g, m in zip(info["graph"], modules):
        cfg = json.loads(json.dumps(m.get_config()))  # as it would be recorded (tuples become lists)
        old = g.get("config") if isinstance(g.get("config"), dict) else {}
        for k in sorted(set(old) | set(cfg)):
            if k not in _FREE_CONFIG and old.get(k) != cfg.get(k):
                out.append(f"{m.name} {k} was {old.get(k)!r}, this run has {cfg.get(k)!r}")
    return out


def load_checkpoint(path, modules: list[Module], settings: dict | None = None) -> tuple[int, list[dict]]:
    """Restore module states and RNG states from a checkpoint folder, after checking it.

    Parameters
    ----------
    path : str or os.PathLike
        A checkpoint folder (``<checkpoint dir>/iter_<n>``).
    modules : list of Module
        The learnable modules of the graph, as given to :func:`save_checkpoint`.
    settings : dict, optional
        This run's settings; a setting recorded in the checkpoint with another value is an
        error (``None``: only the modules' configs are compared).

    Returns
    -------
    iteration : int
        The outer iteration the checkpoint was written after.
    history : list of dict
        The metrics history up to it.

    Raises
    ------
    ValueError
        The checkpoint is corrupt, truncated, a symbolic link or has no checksum; it was written
        by another graph or with other settings (the message names each difference); or a loaded
        parameter is invalid (non-finite, negative or unnormalised probabilities, covariances
        that are not positive definite).  Everything but the parameter checks happens before any
        module is changed.
    """
    path = os.fspath(path)
    info_path = resolve_inside(os.path.dirname(path) or ".", os.path.basename(path), "checkpoint folder", path)
    info_path = os.path.join(info_path, _CKPT_INFO)
    info = read_json(info_path, "checkpoint description")
    ok = (isinstance(info, dict) and isinstance(info.get("iteration"), int) and not isinstance(info["iteration"], bool)
          and info["iteration"] >= 0 and isinstance(info.get("history"), list) and isinstance(info.get("graph"), list)
          and all(isinstance(g, dict) for g in info["graph"]))
    if not ok:
        raise ValueError(f"{info_path} is corrupt: not a serket_pyro checkpoint description")
    names = [g.get("name") for g in info["graph"]]
    if names != [m.name for m in modules]:
        raise ValueError(f"checkpoint {path} holds modules {names}, this graph has {[m.name for m in modules]}")
    diff = _differences(info, modules, settings)
    if diff:
        raise ValueError(f"checkpoint {path} was made with other settings: " + "; ".join(diff)
                         + ". Resume with the same settings, or use another checkpoint folder")
    state = read_tensor_file(os.path.join(path, _CKPT_STATE), info, info_path)
    for m in modules:
        prefix = m.name + "/"
        try:
            m.load_full_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        except (KeyError, RuntimeError, IndexError, TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {path}: the saved state of {m.name} is invalid: {e}") from None
        m.n_updates_ = info["iteration"] + 1
    try:
        set_rng_state({k[4:]: v for k, v in state.items() if k.startswith("rng/")})
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"checkpoint {path}: the saved random number generator state is invalid: {e}") from None
    if info.get("run_id") is not None:  # the resumed run goes on under its own id
        try:
            set_run_id(info["run_id"])
        except ValueError as e:
            raise ValueError(f"{info_path}: {e}") from None
    return info["iteration"], info["history"]


def falling_objectives(history: list[dict], names, rel_tol: float = 0.05) -> list[str]:
    """Modules that made the system's objective fall in each of the last two outer iterations.

    Every module reports its own objective in ``metrics_["objective"]`` (nats, higher is better: a
    GMM's collapsed log joint ``log p(x, z)``, a Markov model's or MLDA's log-likelihood, a VAE's
    ELBO).  One module's objective alone says little: a parent that rightly moves points between
    classes lowers the child's own ``log p(x, z)`` while its own likelihood rises.  The system's
    objective is therefore their sum; when it fell at both of the last two iterations, by more
    than ``rel_tol`` of its magnitude in all, the modules whose own objective fell over those
    iterations are flagged (a sampler's noise rarely does that; a module that drives the system
    into a worse state, e.g. a parent's message that keeps growing one class, does).

    Args:
        history: the records of :func:`fit`, oldest first (``record[name]["objective"]``).
        names: module names to check.
    Returns:
        one sentence per flagged module (empty: nothing to flag).
    """
    if len(history) < 3:
        return []
    vals = {}
    for name in names:
        v = [r.get(name, {}).get("objective") for r in history[-3:]]
        if all(x is not None and math.isfinite(x) for x in v):
            vals[name] = v
    if not vals:
        return []
    a, b, c = (sum(v[i] for v in vals.values()) for i in range(3))
    if not (c < b < a and a - c > rel_tol * max(abs(a), 1.0)):
        return []
    return [f"{name}: the system's objective fell in two outer iterations in a row ({a:.6g} -> {b:.6g} -> "
            f"{c:.6g}) and this module's own fell with it ({v[0]:.6g} -> {v[2]:.6g}); it may be making the "
            "system worse (check the messages it receives)"
            for name, v in vals.items() if v[2] < v[0]]


def fit(*modules: Module, n_iter: int = 5, seed: int | None = None, progress: bool = True,
        checkpoint_dir=None, resume: bool = False, callback=None, guard_tol: float = 0.05,
        settings: dict | None = None, distributed: bool | str = False) -> list[dict]:
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
        settings: the run's settings (JSON values, e.g. ``{"--epochs": 200}``), recorded in every
            checkpoint; resuming from a checkpoint recorded with other settings, or with other
            module configs, raises ``ValueError`` naming each difference.
        distributed: data-parallel over the processes ``torchrun`` started (see
            :mod:`serket_pyro.distributed` and :func:`fit_sharded`): ``True``, every process built
            the graph on the whole data and keeps its block; ``"shards"``, every observation
            already holds only this process's block (rows ``shard_bounds(N, world, rank)``).  In
            one process an ordinary fit.

    Returns:
        history: one record per outer iteration: ``{"iteration", "seconds", "<module name>": metrics}``
        and ``"flags"`` when a module's objective fell two iterations in a row.
    """
    n_iter = check_positive_int(n_iter, "n_iter", "fit")
    if not modules:
        raise ValueError("fit() needs at least one module of the graph")
    if distributed and not _dist.is_sharded() and _dist.init_process_group()[1] > 1:
        return fit_sharded(*modules, n_iter=n_iter, seed=seed, progress=progress, checkpoint_dir=checkpoint_dir,
                           resume=resume, callback=callback, guard_tol=guard_tol, settings=settings,
                           data_sharded=distributed == "shards")
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
            last, history = load_checkpoint(ckpt, allm, settings)
            start = last + 1
            _log.info("resuming from %s: iteration %d of %d", ckpt, start + 1, n_iter)
        else:
            _log.info("no complete checkpoint in %s: starting from the first iteration", checkpoint_dir)
    if start == 0:
        set_seed(seed)

    bar = tqdm(total=(n_iter - start) * len(order), disable=not progress, desc="serket", unit="update")
    try:
        for it in range(start, n_iter):
            t0 = time.perf_counter()
            record = {"iteration": it, "run_id": get_run_id()}
            for m in order:
                bar.set_postfix_str(f"iter {it + 1}/{n_iter} {m.name}")
                m.update()
                if m.metrics_:
                    record[m.name] = dict(m.metrics_)
                bar.update(1)
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            _log.debug("iteration %d/%d done in %.1f s", it + 1, n_iter, record["seconds"])
            flags = falling_objectives(history, [m.name for m in order], guard_tol)
            if flags:
                record["flags"] = flags
                for f in flags:
                    warnings.warn(f, RuntimeWarning, stacklevel=2)
            if checkpoint_dir is not None:
                save_checkpoint(checkpoint_dir, allm, it, history, settings)
                # rewritten whole from the history, so a resumed run has every line
                atomic_write_bytes(os.path.join(os.fspath(checkpoint_dir), "metrics.jsonl"),
                                   "".join(json.dumps(r) + "\n" for r in history).encode())
            if callback is not None:
                callback(it, record)
    finally:
        bar.close()
    return history


def fit_sharded(*modules: Module, seed: int | None = None, progress: bool = True, checkpoint_dir=None,
                settings: dict | None = None, data_sharded: bool = False, **kwargs) -> list[dict]:
    """:func:`fit` data-parallel over the processes of the current process group (``torchrun``).

    Every rank builds the same graph on the whole data; each keeps only its contiguous block of
    rows of every observation (and of every module's ``category``) and runs the ordinary fit
    inside :func:`serket_pyro.distributed.sharded`: the modules all-reduce their statistics, rank
    0 alone writes the output files (the same files as one process writes).  Checkpoints go to
    ``<checkpoint_dir>/rank<r>/`` (each rank's shard state and random streams) and the run's
    settings record the number of processes, so a resumed run needs the same number.

    ``data_sharded``: the observations already hold only this rank's block (each process loaded
    rows :func:`~serket_pyro.distributed.shard_bounds` of ``N``, and ``category`` likewise): nothing
    is cut.  ``seed``: the same on every rank (``None``: rank 0 draws one and sends it to the
    others).  Other arguments: as :func:`fit`.
    """
    rank, world = _dist.init_process_group()
    allm = connected_modules(*modules)
    obs = [m for m in allm if isinstance(m, Observation) and not m.missing]
    sizes = {m.n_points for m in obs}
    if len(sizes) != 1:
        raise ValueError(f"fit(distributed=True): the observations have different numbers of data points {sorted(sizes)}")
    N = sizes.pop()
    if data_sharded:
        N = _dist.blocks_total(N, "fit(distributed='shards')")
    if seed is None:
        import torch

        t = torch.randint(2 ** 31 - 1, (1,)) if rank == 0 else torch.zeros(1, dtype=torch.int64)
        torch.distributed.broadcast(t, 0)
        seed = int(t[0])
    start, stop = _dist.shard_bounds(N, world, rank)
    for m in [] if data_sharded else obs:
        msg = m.forward_msg
        if not hasattr(msg, "value"):
            raise ValueError(f"fit(distributed=True): {m.name} holds a {type(msg).__name__}; only point data are sharded")
        m.set_forward_msg(msg.value[start:stop])
    for m in allm:
        cat = getattr(m, "category", None)
        if cat is not None and len(cat) == N and not data_sharded:
            m.category = cat[start:stop]
    settings = {**(settings or {}), "processes": world}
    ckpt = None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), f"rank{rank:03d}")
    with _dist.sharded(N, seed):
        history = fit(*modules, seed=seed, progress=progress and rank == 0, checkpoint_dir=ckpt,
                      settings=settings, **kwargs)
        if checkpoint_dir is not None and rank == 0:  # the run's metrics at the top, as one process writes
            atomic_write_bytes(os.path.join(os.fspath(checkpoint_dir), "metrics.jsonl"),
                               "".join(json.dumps(r) + "\n" for r in history).encode())
    return history
