"""Saving a whole connected graph of modules to a folder and loading it back, without pickle.

A saved graph is a folder with two files:

* ``graph.json``: the structure.  For every module (Observations included), in construction
  order: its class as an importable path (``serket_pyro.modules.gmm.GMM``; the flat layout's
  ``serket_pyro.gmm.GMM`` still loads), its name (``module002_gmm``), its ``get_config()``, its children by name, whether it had true labels
  (``category``) and how many updates it had done; for every Observation the shape and kind of
  its data (the data themselves are *not* saved).  Plus the SHA-256 and size of ``state.pt``.
* ``state.pt``: one flat ``dict[str, Tensor]`` written with :func:`torch.save`:
  ``<module name>/state/<key>`` (each module's :meth:`~serket_pyro.module.Module.state_dict`),
  ``<module name>/forward/...`` and ``<module name>/backward<i>/...`` (the messages it holds, see
  :meth:`~serket_pyro.module.Module.full_state_dict`) and ``rng/...`` (every RNG state).  It loads
  with ``torch.load(path, weights_only=True)``: no pickled Python objects, only tensors.

``state.pt`` is written first and ``graph.json`` last, both atomically, so a folder with a
``graph.json`` is complete; a file changed, truncated or corrupted afterwards fails the checksum
or the parser and :func:`load_graph` raises ``ValueError`` naming the file before anything is
built (never half-way).

A saved graph may come from someone else, so :func:`load_graph` checks it before reading
``state.pt`` or building anything (:mod:`serket_pyro.safe_files`): ``graph.json`` is a regular
file of at most 64 MiB; every module name (it becomes an output folder name) and the
``state_file`` entry are plain names that stay inside their folder; ``state.pt`` is a regular file
(not a symbolic link) of exactly the recorded size, checked before it is read, with the recorded
SHA-256; it holds tensors only; every module checks the parameters it loads (finite,
probabilities normalised, covariances positive definite).

:func:`load_graph` re-creates every module with its saved class, config and name, connects them
as saved and restores their state.  Two uses:

* **Continue training** with the same data: the messages are restored as well, so the next
  ``update()`` of the loaded graph computes exactly what the saved graph's next ``update()``
  would have computed (same seed, same numbers; ``tests/test_persistence.py`` checks it).
* **Recognition** on new data (``mode="recog"``): every learnable module is rebuilt with
  ``mode="recog"`` (learned parameters frozen, ``*_recog`` files); messages are not restored
  (they belong to the training data).  An Observation whose only parents are MLDA modules (any
  module class with ``accepts_missing_observation = True``) may be left out: it is replaced by
  all-zero counts of its saved width, which MLDA treats as a missing modality for every document
  (recognition from the other modalities: MLDA's forward message is then exactly that of an MLDA
  without the modality, ``tests/test_persistence.py``).  Other
  observations (e.g. a VAE's images) are required.  An observation computed by an extractor
  (:class:`~serket_pyro.modules.hac.HACFeatureExtractor`: speech -> HAC counts) is saved with its
  config and learned codebooks, and is given new *speech* when loaded: the saved codebooks,
  checked against its config, turn it into counts.  ``exclude=["mm"]`` leaves a top module out,
  e.g. a Markov model when the new points are not in the training sequence's order.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import sys

import numpy as np
import torch

from .messages import message_to_tensors
from .module import Module, Observation, connected_modules
from .output import atomic_save_json, atomic_write_bytes
from .safe_files import read_json, read_tensor_file, resolve_inside, safe_name, tensor_file_bytes
from .rng_state import get_rng_state, set_rng_state
from .system import System
from .validation import check_category

__all__ = ["GRAPH_FILE", "STATE_FILE", "load_graph", "read_graph_info", "save_graph"]

GRAPH_FILE = "graph.json"
STATE_FILE = "state.pt"
_FORMAT = "serket_pyro.graph"
_VERSION = 1
#: packages whose classes load_graph imports without being told (others: ``allowed_packages``)
_TRUSTED = ("serket_pyro.",)


def _class_path(m: Module) -> str:
    """``package.module.Class``; a class of a script run as ``__main__`` is recorded under the
    script's module name (``python examples/custom_module.py`` -> ``custom_module.PCA``), which a
    fresh process imports with the script's folder on ``sys.path``."""
    cls = type(m)
    mod = cls.__module__
    if mod == "__main__":
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            mod = spec.name
        elif getattr(main, "__file__", None):
            mod = os.path.splitext(os.path.basename(main.__file__))[0]
    return f"{mod}.{cls.__qualname__}"


def _short_name(m: Module) -> str:
    match = re.fullmatch(r"module\d+_(.*)", m.name)
    return match.group(1) if match else m.name


def _modules_of(target) -> tuple[list[Module], dict | None]:
    if isinstance(target, System):
        return connected_modules(*target.modules.values()), {
            "name": target.name, "result": target.result,
            "keys": [[k, m.name] for k, m in target.modules.items()]}
    if isinstance(target, Module):
        return connected_modules(target), None
    mods = list(target)
    if not mods or not all(isinstance(m, Module) for m in mods):
        raise ValueError("save_graph() takes a System, a Module or a list of modules of one graph")
    return connected_modules(*mods), None


def save_graph(folder, graph, *, distributed: bool = False) -> str:
    """Save the whole graph connected to ``graph`` (a :class:`~serket_pyro.system.System`, a
    module or a list of modules) to ``folder`` (created if needed; existing files replaced).

    ``distributed=True`` after ``fit(..., distributed=True)`` under ``torchrun`` (every process
    calls it, a collective): each process holds only its block of rows, so the rows of the
    observations, of the messages and of each module's ``_row_state`` are gathered in rank order
    and rank 0 writes the same folder one process would (the others write nothing).  A state
    entry with a row per point that differs between the processes but is not in ``_row_state``
    is refused (``ValueError`` naming the module), rather than saved as rank 0's block.  In one
    process it is the plain save.

    Returns the folder path.  Raises ``ValueError`` for a config that is not JSON-serialisable.
    """
    modules, system = _modules_of(graph)
    names = [m.name for m in modules]
    if len(set(names)) != len(names):
        raise ValueError(f"save_graph(): module names are not unique: {names}")
    for n in names:  # load_graph refuses other names: refuse to write a graph it cannot read
        safe_name(n, "module name", "save_graph()")
    from . import distributed as _dist

    if distributed and _dist.world_size() > 1 and not _dist.is_sharded():
        with _dist.sharded(_global_rows(modules)):
            return _save_graph(folder, modules, system, _dist)
    return _save_graph(folder, modules, system, _dist if distributed and _dist.is_sharded() else None)


def _global_rows(modules) -> int:
    """The data's rows over every process (each holds the block ``shard_bounds`` of them)."""
    from . import distributed as _dist

    local = {int(m.forward_msg.N) for m in modules if isinstance(m, Observation) and not m.missing}
    if len(local) != 1:
        raise ValueError(f"save_graph(distributed=True): the observations hold different numbers of rows {sorted(local)}")
    return _dist.blocks_total(local.pop(), "save_graph(distributed=True)")


def _row_key(m: Module, key: str) -> bool:
    """Whether ``key`` (a :meth:`~serket_pyro.module.Module.full_state_dict` key) has a row per
    data point: a message, or a ``_row_state`` attribute's entry."""
    if not key.startswith("state/"):
        return True  # forward/..., backward<i>/...: messages, (N, ...)
    k = key[len("state/"):]
    bases = [a.strip("_") for a in m._row_state]
    return any(k == b or k.startswith(b + ".") or k.startswith(b + "/") for b in bases)


def _gathered(m: Module, key: str, v: torch.Tensor, dist_mod) -> torch.Tensor:
    """``v`` with every process's rows (rank order) if it has a row per point, else as it is;
    refuses an undeclared state entry that has a row per point and differs between the processes."""
    if _row_key(m, key):
        return dist_mod.gather_rows(v)
    rows = dist_mod.local_rows()
    raw = v.detach().cpu().contiguous().numpy().tobytes()
    digest = torch.tensor([int.from_bytes(hashlib.sha256(raw).digest()[:7], "little")], dtype=torch.int64)
    shape_ok = torch.tensor([int(v.ndim >= 1 and v.shape[0] == rows.stop - rows.start)], dtype=torch.int64)
    info = dist_mod.all_gather_same(torch.cat([digest, shape_ok]))
    if bool(info[:, 1].all()) and len(set(info[:, 0].tolist())) > 1:
        raise ValueError(f"save_graph(distributed=True): {m.name}: state entry {key[len('state/'):]!r} has a row per "
                         f"data point and differs between the processes; name its attribute in "
                         f"{type(m).__name__}._row_state so that its rows are gathered")
    return v


def _save_graph(folder, modules, system, dist_mod) -> str:
    """:func:`save_graph` of checked ``modules``; ``dist_mod``: :mod:`serket_pyro.distributed`
    inside a sharded context (gather the rows, rank 0 writes) or ``None``."""
    entries, state = [], {}
    for m in modules:
        e = {"name": m.name, "short_name": _short_name(m), "index": m.index, "class": _class_path(m),
             "learnable": bool(m.learnable), "children": [c.name for c in m.children],
             "n_updates": int(m.n_updates_)}
        if isinstance(m, Observation) and m.missing:  # Observation(None): a missing modality
            e["observation"] = {"kind": "missing", "N": None, "shape": None}
        elif isinstance(m, Observation):
            msg = m.forward_msg
            first = next(iter(message_to_tensors(msg).values()))
            shape = [int(s) for s in first.shape]
            if dist_mod is not None:
                shape[0] = dist_mod.global_rows(shape[0])
            e["observation"] = {"kind": type(msg).__name__, "N": shape[0], "shape": shape,
                                "input": getattr(m, "input_kind", "array")}
            if m._fitted:  # an observation computed by a fitted extractor: its settings, to apply it again
                e["config"] = m.get_config()
        else:
            e["config"] = m.get_config()
            e["has_category"] = getattr(m, "category", None) is not None
            e["output_dir"] = os.path.abspath(m.output_dir)
        entries.append(e)
        for k, v in m.full_state_dict().items():
            if not isinstance(v, torch.Tensor):
                raise ValueError(  # noqa: TRY004 - the project reports bad inputs as ValueError
                    f"save_graph(): {m.name} state entry {k!r} is a {type(v).__name__}, not a tensor")
            if dist_mod is not None:
                v = _gathered(m, k, v, dist_mod)
            state[f"{m.name}/{k}"] = v.detach().cpu().contiguous()
    state.update({f"rng/{k}": v for k, v in get_rng_state().items()})
    if dist_mod is not None and not dist_mod.is_writer():
        dist_mod.barrier()  # rank 0 writes the folder; the others return once it is complete
        return os.fspath(folder)

    data, record = tensor_file_bytes(state)
    info = {"format": _FORMAT, "version": _VERSION, "modules": entries, "system": system,
            "state_file": STATE_FILE, **record}
    try:
        json.dumps(info)
    except (TypeError, ValueError) as e:
        raise ValueError(f"save_graph(): a module config is not JSON-serialisable: {e}") from None
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    atomic_write_bytes(os.path.join(folder, STATE_FILE), data)
    atomic_save_json(os.path.join(folder, GRAPH_FILE), info)
    if dist_mod is not None:
        dist_mod.barrier()
    return folder


def read_graph_info(folder) -> dict:
    """The validated content of ``<folder>/graph.json`` (``ValueError`` naming the file otherwise)."""
    path = os.path.join(os.fspath(folder), GRAPH_FILE)
    if not os.path.lexists(path):
        raise ValueError(f"{path} not found: {folder} is not a saved graph (save it with srk.save_graph)")
    info = read_json(path, "saved graph description")
    if not isinstance(info, dict) or info.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a serket_pyro graph file")
    if info.get("version") != _VERSION:
        raise ValueError(f"{path} has format version {info.get('version')!r}, this serket_pyro reads {_VERSION}")
    mods = info.get("modules")
    ok = isinstance(mods, list) and mods and all(
        isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("class"), str)
        and isinstance(e.get("children"), list) and ("observation" in e or isinstance(e.get("config"), dict))
        for e in mods)
    if not ok:
        raise ValueError(f"{path} is corrupt: its module list is malformed")
    for e in mods:  # names become output folder names: plain names only, before anything else
        safe_name(e["name"], "module name", path)
    names = {e["name"] for e in mods}
    if len(names) != len(mods):
        raise ValueError(f"{path} is corrupt: module names are not unique")
    resolve_inside(folder, info.get("state_file", STATE_FILE), "state file", path)
    for e in mods:
        bad = [c for c in e["children"] if c not in names]
        if bad:
            raise ValueError(f"{path} is corrupt: {e['name']} has unknown children {bad}")
    return info


def _read_state(folder, info) -> dict[str, torch.Tensor]:
    graph_file = os.path.join(os.fspath(folder), GRAPH_FILE)
    path = resolve_inside(folder, info.get("state_file", STATE_FILE), "state file", graph_file)
    return read_tensor_file(path, info, graph_file)


def current_class_path(path: str) -> str:
    """The class path ``path`` has in this layout: graphs saved by 0.1 name ``serket_pyro.gmm.GMM``,
    which now lives in ``serket_pyro.modules.gmm`` (the alias table is
    :data:`serket_pyro.MOVED_MODULES`)."""
    from . import MOVED_MODULES

    mod_name, _, cls_name = path.rpartition(".")
    pkg, _, old = mod_name.rpartition(".")
    if pkg == __package__ and old in MOVED_MODULES:
        return f"{pkg}.{MOVED_MODULES[old]}.{cls_name}"
    return path


def _import_class(path: str, allowed: tuple[str, ...]):
    path = current_class_path(path)
    if not any(path.startswith(p) for p in allowed):
        raise ValueError(f"{GRAPH_FILE} names class {path}, outside the allowed packages {list(allowed)}; "
                         "pass allowed_packages=[...] to load_graph to trust it")
    mod_name, _, cls_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{GRAPH_FILE} names class {path}, which cannot be imported: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise ValueError(f"{GRAPH_FILE} names {path}, which is not a serket_pyro Module")  # noqa: TRY004
    return cls


def _observation_inputs(info, observations) -> dict:
    """``{observation name: data or None}`` from a list (saved order) or a dict (names or system keys)."""
    obs_entries = [e for e in info["modules"] if "observation" in e]
    names = [e["name"] for e in obs_entries]
    if observations is None:
        return dict.fromkeys(names)
    if isinstance(observations, dict):
        keys = dict((info.get("system") or {}).get("keys") or [])
        out = dict.fromkeys(names)
        for k, v in observations.items():
            name = keys.get(k, k)
            if name not in out:
                raise ValueError(f"load_graph(): unknown observation {k!r}; the graph has {names}"
                                 + (f" (keys {[k for k, n in keys.items() if n in names]})" if keys else ""))
            out[name] = v
        return out
    observations = list(observations)
    if len(observations) != len(names):
        raise ValueError(f"load_graph(): the graph has {len(names)} observations {names}, got {len(observations)}")
    return dict(zip(names, observations))


def load_graph(folder, observations=None, *, mode: str | None = None, category=None, messages: bool | None = None,
               restore_rng: bool = False, output_root=None, device=None, overrides: dict | None = None,
               allowed_packages=(), exclude=()) -> System:
    """Re-create a graph saved by :func:`save_graph` on ``observations`` and restore its state.

    Args:
        folder: the saved graph's folder.
        observations: the data of every Observation: a list in the saved (construction) order, or
            a dict keyed by module name (``"module000_obs"``) or, for a saved System, by its keys
            (``"obs1"``).  ``None`` entries or missing keys: an observation whose parents are all
            MLDA modules gets all-zero counts of its saved width (a missing modality); any other
            missing observation is an error.
        mode: ``"recog"`` rebuilds every learnable module in recognition mode (parameters frozen,
            ``*_recog`` files), ``"learn"`` in learning mode; ``None`` keeps the saved modes.
        category: ``(N,)`` true labels of the new data, given to every module that had labels
            when saved (to score ``acc_recog.txt``); ``None``: no scoring.
        messages: restore the saved messages and update counts (to continue training on the same
            data).  ``None``: only when every observation has its saved shape and ``mode`` is not
            ``"recog"``.
        restore_rng: also restore the random number generators as they were when saved.
        output_root: output folder of the re-created modules (default: the global output root).
        device: torch device for every module (default: the saved one).
        overrides: ``{module name: {config key: value}}`` replacing saved config entries (e.g.
            custom ``encoder``/``decoder`` networks of a VAE, which cannot be saved as JSON).
        allowed_packages: extra module-path prefixes whose classes may be imported (classes of
            ``serket_pyro`` are always allowed).
        exclude: modules to leave out (names or System keys), e.g. ``["mm"]`` to recognise points
            whose order means nothing without the Markov model on top.  Only modules that no
            kept module reads (parents at the top of the graph, with their own parents) can be
            left out.

    Returns:
        a :class:`~serket_pyro.system.System` with the saved keys (module names otherwise) and
        result module.

    Raises:
        ValueError: corrupt or truncated files (naming the file), a class that cannot be imported,
            observations that do not fit the saved graph, a state that does not fit a module.
    """
    if mode not in (None, "learn", "recog"):
        raise ValueError(f"load_graph(): mode must be None, 'learn' or 'recog', got {mode!r}")
    info = read_graph_info(folder)
    state = _read_state(folder, info)  # checked before anything is built
    allowed = _TRUSTED + tuple(allowed_packages)
    entries = _without(info, exclude)
    classes = {e["name"]: _import_class(e["class"], allowed) for e in entries}
    overrides = overrides or {}
    data = _observation_inputs(info, observations)

    # observations: given data, or zeros for a modality only MLDA modules read
    parents_of = {e["name"]: [p for p in entries if e["name"] in p["children"]] for e in entries}
    given_n = set()
    for e in entries:
        if "observation" in e and data.get(e["name"]) is not None:
            d = data[e["name"]]
            given_n.add(int(d.shape[0]) if hasattr(d, "shape") else len(d))
    if len(given_n) > 1:
        raise ValueError(f"load_graph(): the observations have different numbers of data points {sorted(given_n)}")
    built: dict[str, Module] = {}
    same_shapes = True
    for e in entries:
        if "observation" not in e:
            continue
        name, d = e["name"], data.get(e["name"])
        if e["observation"].get("shape") is None:  # saved as Observation(None)
            if d is None:
                built[name] = classes[name](None)
                built[name].index, built[name].name = int(e.get("index", built[name].index)), name
                same_shapes = False
                continue
            saved_shape = (None, *np.shape(d)[1:])
        else:
            saved_shape = tuple(e["observation"]["shape"])
        if d is None:
            parents = parents_of[name]
            if not parents or not all(classes[p["name"]].accepts_missing_observation for p in parents):
                raise ValueError(f"load_graph(): observation {name} is required (only an observation read by MLDA "
                                 "modules alone, or modules with accepts_missing_observation, can be left out as a "
                                 "missing modality)")
            if not given_n:
                raise ValueError("load_graph(): at least one observation must be given")
            d = torch.zeros((next(iter(given_n)),) + saved_shape[1:], dtype=torch.float64)
            same_shapes = False
        cls = classes[name]
        if data.get(name) is None or not hasattr(cls, "from_saved"):
            obs = (cls if data.get(name) is not None else Observation)(d)
        else:  # an extractor (speech -> counts): rebuilt with its saved codebooks on the new input
            prefix = f"{name}/state/"
            obs = cls.from_saved(d, e.get("config"), {k[len(prefix):]: v for k, v in state.items()
                                                      if k.startswith(prefix)}, name)
        obs.index, obs.name = int(e.get("index", obs.index)), name
        shape = tuple(next(iter(message_to_tensors(obs.forward_msg).values())).shape)
        if shape != saved_shape:
            same_shapes = False
            if shape[1:] != saved_shape[1:]:
                raise ValueError(f"load_graph(): observation {name} has data points of shape "
                                 f"{shape[1:]}, the saved graph was trained on {saved_shape[1:]}")
        built[name] = obs

    if messages is None:
        messages = same_shapes and mode != "recog"
    n_new = next(iter(given_n)) if given_n else None
    for e in entries:
        if "observation" in e:
            continue
        name = e["name"]
        cfg = dict(e["config"])
        cfg.update(overrides.get(name, {}))
        objects = [k for k in classes[name]._object_params if isinstance(cfg.get(k), str)]
        if objects:
            raise ValueError(f"load_graph(): {name} used custom objects ({', '.join(str(cfg[k]) for k in objects)}), "
                             "saved by class name only; pass overrides={'" + name + "': {"
                             + ", ".join(f"'{k}': ..." for k in objects) + "}}")
        if mode is not None and "mode" in cfg:
            cfg["mode"] = mode
        if device is not None and "device" in cfg:
            cfg["device"] = str(device)
        if e.get("has_category") and category is not None:
            cfg["category"] = check_category(category, n_new, name)
        try:
            m = classes[name](**cfg)
        except TypeError as err:
            raise ValueError(f"load_graph(): cannot re-create {name} from its saved config: {err}") from None
        m.index, m.name, m.output_root = int(e.get("index", m.index)), name, output_root
        if mode is not None:
            m.mode = mode
        built[name] = m
    for e in entries:
        if e["children"]:
            built[e["name"]].connect(*(built[c] for c in e["children"]))

    for e in entries:
        if "observation" in e:
            continue
        m = built[e["name"]]
        prefix = m.name + "/"
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not messages:
            sub = {k: v for k, v in sub.items() if k.startswith("state/")}
        try:
            m.load_full_state_dict(sub)
        except (KeyError, RuntimeError, IndexError, TypeError) as err:
            raise ValueError(f"load_graph(): the saved state of {m.name} does not fit it: {err}") from None
        except ValueError as err:  # invalid numbers (NaN, unnormalised probabilities...): name the file
            raise ValueError(f"{os.path.join(os.fspath(folder), STATE_FILE)}: the saved state of {m.name} is "
                             f"invalid: {err}") from None
        m.n_updates_ = int(e.get("n_updates", 0)) if messages else 0
    if messages:
        for m in built.values():  # messages must have the data's N
            for msg in [m.forward_msg, *m._backward_msgs.values()]:
                if msg is not None and n_new is not None and msg.N != n_new:
                    raise ValueError(f"load_graph(): saved messages of {m.name} are for N={msg.N}, the data have "
                                     f"N={n_new}; load with messages=False")
    if restore_rng:
        rng = {k[4:]: v for k, v in state.items() if k.startswith("rng/")}
        if rng:
            set_rng_state(rng)

    sysinfo = info.get("system") or {}
    keys = dict(sysinfo.get("keys") or [(e["name"], e["name"]) for e in entries])
    keys = {k: n for k, n in keys.items() if n in built}
    modules = {k: built[n] for k, n in keys.items() if n in built}
    for e in entries:  # modules saved outside the System's dict
        if e["name"] not in keys.values():
            modules[e["name"]] = built[e["name"]]
    result = sysinfo.get("result")
    if result not in modules:
        learnable = [k for k, m in modules.items() if m.learnable]
        result = learnable[-1] if learnable else next(iter(modules))
    return System(sysinfo.get("name", "graph"), modules, result=result)


def _without(info, exclude) -> list[dict]:
    entries = info["modules"]
    if not exclude:
        return entries
    keys = dict((info.get("system") or {}).get("keys") or [])
    names = {e["name"] for e in entries}
    drop = set()
    for x in exclude:
        name = keys.get(x, x)
        if name not in names:
            raise ValueError(f"load_graph(): cannot exclude unknown module {x!r}")
        drop.add(name)
    for e in entries:
        if e["name"] not in drop and any(c in drop for c in e["children"]):
            raise ValueError(f"load_graph(): cannot exclude {sorted(drop & set(e['children']))}: "
                             f"{e['name']} reads them")
    kept = [e for e in entries if e["name"] not in drop]
    if not any("observation" not in e for e in kept):
        raise ValueError("load_graph(): exclude leaves no learnable module")
    return kept


def observation_shapes(folder) -> dict[str, tuple]:
    """``{observation name: saved data shape}`` of a saved graph."""
    return {e["name"]: None if e["observation"].get("shape") is None else tuple(e["observation"]["shape"])
            for e in read_graph_info(folder)["modules"] if "observation" in e}

