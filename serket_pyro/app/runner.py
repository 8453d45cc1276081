"""What the example scripts and the ``serket-pyro run`` command share: the tutorial's argument
defaults, loading the tutorial data (offline fallback: the embedded MNIST subset), running a
system with a progress bar, and the final one-screen summary."""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import torch

from .. import datasets
from ..module import reset_module_counter
from ..output import get_run_id, set_output_root, set_run_id
from ..seed import set_seed
from ..validation import check_device
from .arguments import SYSTEMS, add_tutorial_arguments, positive_int

__all__ = [
    "SYSTEMS",
    "add_tutorial_arguments",
    "build_system",
    "cyclic_order",
    "format_summary",
    "load_inputs",
    "load_recognition_data",
    "positive_int",
    "require_data_file",
    "recognise",
    "run_system",
    "write_run_info",
]

def check_torch_device(device) -> torch.device:
    """The torch device named by ``--device``, checked to exist on this machine.

    Parameters
    ----------
    device : str
        ``cpu``, ``cuda``, ``cuda:<i>`` or ``mps``.

    Returns
    -------
    torch.device
        The device.

    Raises
    ------
    ValueError
        An unknown device, or a CUDA / MPS device this machine does not have.
    """
    try:
        d = check_device(device)
    except ValueError as e:
        raise ValueError(f"--device {device}: {e}") from None
    if d.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"--device {device}: CUDA is not available here (this torch "
                             f"{'has no CUDA support' if torch.version.cuda is None else 'finds no CUDA GPU'}); "
                             "use --device cpu")
        if d.index is not None and d.index >= n:
            raise ValueError(f"--device {device}: this machine has {n} CUDA device(s), numbered from 0")
    elif d.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {device}: MPS is not available here; use --device cpu")
    elif d.type != "cpu":
        raise ValueError(f"--device {device}: use cpu, cuda, cuda:<i> or mps")
    return d


def require_data_file(data_dir, filename: str) -> None:
    """Check that an explicit ``--data-dir`` holds ``filename`` (the loaders would otherwise go on
    to ``$SERKET_PYRO_DATA``, the user cache or other data).

    Parameters
    ----------
    data_dir : str or os.PathLike or None
        The ``--data-dir`` flag (``None``: nothing to check).
    filename : str
        The data file needed, e.g. ``serket_tutorial.npz``.

    Raises
    ------
    FileNotFoundError
        A message of several lines: where it looked and what to do.
    """
    if data_dir is None:
        return
    path = os.path.join(os.fspath(data_dir), filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--data-dir {os.fspath(data_dir)} holds no {filename}. Looked in:\n  - {path}\n"
            f"Put {filename} there, or leave --data-dir out to use ${datasets.ENV_VAR} or the user cache "
            f"folder {datasets.cache_dir()} (an explicit --data-dir is the only place searched).")


def load_inputs(data_dir=None, n=None, offline_fallback=True):
    """Tutorial data: ``images (N, 784)`` in [0, 1], ``speech (N, 2400)`` counts or ``None``,
    ``category (N,)``, and a description of the source.

    Looks for ``serket_tutorial.npz`` (see :mod:`serket_pyro.datasets`); without it and without
    network, falls back to the embedded 3,000-image MNIST subset (images only, same cyclic order)
    when ``offline_fallback`` is true and no ``data_dir`` is given (an explicit folder that lacks
    the file is an error: the user asked for those data).
    """
    require_data_file(data_dir, "serket_tutorial.npz")
    try:
        d = datasets.load_tutorial(root=data_dir)
        images, speech, category, source = d.images, d.hac, d.category, "serket_tutorial.npz"
    except (FileNotFoundError, OSError) as e:
        if not offline_fallback or data_dir is not None:
            raise
        s = datasets.load_mnist_subset()
        images, speech, category = s.images, None, s.category
        source = f"embedded MNIST subset (serket_tutorial.npz unavailable: {str(e).splitlines()[0]})"
    images = np.asarray(images, dtype=np.float32)
    if images.max() > 1.0:
        images = images / 255.0
    if n is not None:
        images, category = images[:n], category[:n]
        speech = None if speech is None else speech[:n]
    return images, speech, np.asarray(category), source


def speech_observation(data_dir=None, n=None, seed: int = 0):
    """The tutorial's speech computed by this package: a
    :class:`~serket_pyro.modules.hac.HACFeatureExtractor` (3 x 20 codewords, lags 5 and 2, the
    tutorial's layout) learned on the raw MFCC frames of the tutorial's utterances
    (:func:`~serket_pyro.datasets.load_tutorial_speech`), first ``n`` rows."""
    from ..modules.hac import HACFeatureExtractor

    require_data_file(data_dir, "spoken_arabic_digit.npz")
    utt = datasets.load_tutorial_speech(root=data_dir).utterances
    return HACFeatureExtractor(utt if n is None else utt[:n], [20, 20, 20], [5, 2], seed=seed)


def load_user_inputs(specs, category_path=None, n=None, deskew: bool = True, rows=None):
    """``serket-pyro run MODEL --data PATH [--data PATH]``: the user's own data, the same way as
    :func:`load_inputs` returns the tutorial's (``images, speech, category, description``).

    The first file is the VAE's input (``(N, D)`` or ``(N, H, W)`` in [0, 1], or 8-bit 0..255,
    scaled), the second the speech counts of the MLDA systems (``(N, V)`` non-negative integers);
    ``.npy``, single-array ``.npz`` or text.  ``category_path``: true labels ``(N,)`` to score.
    Every check happens before anything is written, on every row (of the first ``n``).

    ``rows``: a function of the number of points (after ``n``) giving the ``slice`` of them to
    return (a data-parallel run: this process's block); images and speech are then that block
    only, and a ``.npy`` file is memory-mapped and checked in chunks, so that no more than the
    block is held (the labels, small, are returned whole).
    """
    if not 1 <= len(specs) <= 2:
        raise ValueError(f"--data: give one file (images) or two (images, speech counts), got {len(specs)}")
    arrays = []
    for i, path in enumerate(specs):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--data {path}: no such file")
        a = np.load(path, mmap_mode="r", allow_pickle=False) if path.endswith(".npy") else np.asarray(_read_array(path))
        if a.ndim == 3 and i == 0:
            a = a.reshape(len(a), -1)
        if a.ndim != 2 or len(a) == 0:
            raise ValueError(f"--data {path}: need a 2-D array (points x features), got shape {a.shape}")
        arrays.append(a)
    if len(arrays) == 2 and len(arrays[1]) != len(arrays[0]):
        raise ValueError(f"--data: {specs[0]} has {len(arrays[0])} points, {specs[1]} has {len(arrays[1])}")
    N = len(arrays[0]) if n is None else min(len(arrays[0]), n)
    lo = hi = None
    eight_bit = True
    for a0 in range(0, N, _CHECK_ROWS):  # every row checked, a chunk at a time (a memory-mapped file stays on disk)
        chunk = [np.asarray(a[a0:min(N, a0 + _CHECK_ROWS)]) for a in arrays]
        for path, c in zip(specs, chunk):
            if not np.isfinite(c).all():
                raise ValueError(f"--data {path}: holds NaN or infinite values")
        lo = chunk[0].min() if lo is None else min(lo, chunk[0].min())
        hi = chunk[0].max() if hi is None else max(hi, chunk[0].max())
        eight_bit = eight_bit and bool((chunk[0] == np.round(chunk[0])).all())
        if len(chunk) == 2 and ((chunk[1] < 0).any() or (chunk[1] != np.round(chunk[1])).any()):
            raise ValueError(f"--data {specs[1]}: the MLDA's input must be counts (non-negative integers)")
    scaled = False
    if lo < 0 or hi > 1:
        if lo >= 0 and hi <= 255 and eight_bit:
            scaled = True  # 8-bit pixels
        else:
            raise ValueError(f"--data {specs[0]}: the VAE's input must lie in [0, 1] (or be 8-bit 0..255), "
                             f"got values in [{lo:.4g}, {hi:.4g}]; scale it first")
    side = int(round(np.sqrt(arrays[0].shape[1])))
    if deskew and side * side != arrays[0].shape[1]:
        raise ValueError(f"--data {specs[0]}: {arrays[0].shape[1]} features per point are not a square image, "
                         "which deskewing needs; pass --no-deskew")
    category = None
    if category_path is not None:
        category = np.asarray(_read_array(category_path)).reshape(-1)
        if len(category) != len(arrays[0]) or (category != np.round(category)).any():
            raise ValueError(f"--category {category_path}: need {len(arrays[0])} integer labels, "
                             f"got {len(category)} values")
        category = category.astype(np.int64)[:N]
    block = slice(0, N) if rows is None else rows(N)
    images = np.asarray(arrays[0][block], dtype=np.float32)
    if scaled:
        images = images / 255.0
    speech = np.array(arrays[1][block]) if len(arrays) == 2 else None
    return images, speech, category, ", ".join(os.path.basename(p) for p in specs)


#: rows per chunk when :func:`load_user_inputs` checks the data
_CHECK_ROWS = 65536


def build_system(name: str, images, speech, category, args):
    import importlib

    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; choose one of {', '.join(SYSTEMS)}")
    mod_name, needs_speech = SYSTEMS[name]
    build = importlib.import_module(mod_name).build
    kw = {"latent_dim": args.latent_dim, "epochs": args.epochs, "batch_size": args.batch_size,
              "n_classes": args.classes, "deskew": bool(getattr(args, "deskew", True)), "device": args.device}
    if needs_speech:
        if speech is None:
            raise ValueError(f"{name} needs the speech modality: from serket_tutorial.npz (set SERKET_PYRO_DATA "
                             "or pass --data-dir), or a second --data file of counts")
        return build(images, speech, category, **kw)
    return build(images, category, **kw)


def run_settings(name: str, args, arrays) -> dict:
    """What a checkpoint records of a ``serket-pyro run`` to refuse resuming with other settings.

    Parameters
    ----------
    name : str
        The tutorial system.
    args : argparse.Namespace
        The parsed flags.
    arrays : sequence of array or None
        The input data (images, speech, labels); their SHA-256 is recorded.

    Returns
    -------
    dict
        ``{"model", "--n", "--epochs", "--batch-size", "--latent-dim", "--classes", "--deskew",
        "--seed", "data SHA-256"}``; ``--iterations`` may change (to run further).
    """
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return {"model": name, "--n": args.n, "--epochs": args.epochs, "--batch-size": args.batch_size,
            "--latent-dim": args.latent_dim, "--classes": args.classes,
            "--deskew": bool(getattr(args, "deskew", True)), "--seed": args.seed, "data SHA-256": h.hexdigest()}


def run_system(name: str, args) -> tuple:
    """Build and fit a tutorial system from parsed arguments; returns ``(system, seconds, source)``.

    Every check (flags, data, device, the checkpoint to resume from) is done before the first
    file is written.
    """
    resume = bool(getattr(args, "resume", False))
    distributed = bool(getattr(args, "distributed", False))
    if resume and args.checkpoint_dir is None:
        raise ValueError("--resume needs --checkpoint-dir (the folder of the interrupted run's checkpoints)")
    check_torch_device(args.device)
    torch.set_num_threads(args.threads)
    set_output_root(args.output)
    set_run_id(None)  # a new run (resuming takes the checkpoint's id below)
    set_seed(args.seed)
    from .. import distributed as _dist

    rank, world = _dist.init_process_group() if distributed else (0, 1)
    # a data-parallel run keeps only this process's block of rows (a .npy file is memory-mapped and
    # read for that block only); --speech ours computes the speech from the whole data, so there
    # every process loads it all and fit(distributed=True) cuts the blocks
    shards = world > 1 and getattr(args, "speech", "tutorial") != "ours"
    block = (lambda n: slice(*_dist.shard_bounds(n, world, rank))) if shards else None
    if getattr(args, "data", None):
        images, speech, category, source = load_user_inputs(args.data, args.category, args.n,
                                                            bool(getattr(args, "deskew", True)), rows=block)
    else:
        if getattr(args, "category", None) is not None:
            raise ValueError("--category goes with --data (the tutorial data bring their labels)")
        images, speech, category, source = load_inputs(args.data_dir, args.n)
        if shards:
            b = block(len(images))
            images, speech = images[b], None if speech is None else speech[b]
    all_category = category  # every label (rank 0's report); the modules score on their block
    if shards and category is not None:
        category = category[block(len(category))]
    reset_module_counter()  # the same folder names (module001_...) as a fresh process
    speech_kind = getattr(args, "speech", "tutorial")
    if speech_kind == "ours":
        if not SYSTEMS[name][1]:
            raise ValueError(f"--speech ours: {name} has no speech modality")
        if getattr(args, "data", None):
            raise ValueError("--speech ours computes the tutorial's speech; with --data give your own counts instead")
        speech, source = speech_observation(args.data_dir, args.n, args.seed), \
            source + " images; speech: UCI Spoken Arabic Digit MFCC -> HACFeatureExtractor (codebooks saved)"
    elif speech_kind != "tutorial":
        raise ValueError(f"--speech must be 'tutorial' or 'ours', got {speech_kind!r}")
    system = build_system(name, images, speech, category, args)
    counts = np.asarray(speech.forward_msg) if speech is not None and not isinstance(speech, np.ndarray) else speech
    settings = run_settings(name, args, (images, counts, category))
    if speech_kind == "ours":
        settings["--speech"] = "ours"
    if resume and not distributed:  # (a distributed run checks each process's checkpoint in fit)
        from ..driver import latest_checkpoint, load_checkpoint
        from ..module import connected_modules

        ckpt = latest_checkpoint(args.checkpoint_dir)
        if ckpt is not None:  # checked (files, settings, parameters) before anything is written;
            # fit() restores the same checkpoint again below
            load_checkpoint(ckpt, [m for m in connected_modules(*system.modules.values()) if m.learnable], settings)
    t0 = time.perf_counter()
    if rank == 0:
        write_run_info(args.output, {"command": "run", "model": name, "mode": "learn",
                                     "result": system.result_module.name,
                                     "checkpoint_dir": None if args.checkpoint_dir is None
                                     else os.path.abspath(args.checkpoint_dir),
                                     "data_dir": args.data_dir, "n": args.n, "seed": args.seed, "source": source,
                                     "deskew": bool(getattr(args, "deskew", True))},
                       all_category, images)
    system.fit(n_iter=args.iterations, seed=args.seed, progress=not args.no_progress,
               checkpoint_dir=args.checkpoint_dir, resume=resume, settings=settings,
               distributed="shards" if shards else distributed)
    seconds = time.perf_counter() - t0
    if getattr(args, "save", None):
        from ..persistence import save_graph

        save_graph(args.save, system, distributed=distributed)  # (distributed: rows gathered, rank 0 writes)
    return system, seconds, source


def write_run_info(output, info: dict, category=None, images=None, n_samples: int = 10) -> None:
    """``<output>/run.json`` (what ran, and the run's id) and ``<output>/report_inputs.npz`` (true labels and the first
    ``n_samples`` input images), which ``serket-pyro report`` reads."""
    from ..output import atomic_save_json, atomic_savez
    from .plots import REPORT_INPUTS, RUN_INFO

    atomic_save_json(os.path.join(output, RUN_INFO), {**info, "run_id": get_run_id()})
    arrays = {}
    if category is not None:
        arrays["category"] = np.asarray(category, dtype=np.int64)
    if images is not None:
        images = np.asarray(images)
        k = min(n_samples, len(images))
        arrays["sample_index"] = np.arange(k)
        arrays["sample_images"] = images[:k].reshape(k, -1).astype(np.float32)
    if arrays:
        atomic_savez(os.path.join(output, REPORT_INPUTS), **arrays)


def cyclic_order(labels) -> np.ndarray:
    """Indices that put the points in the tutorials' cyclic label order 0, 1, ..., 9, 0, 1, ...
    (as far as every label has points left; the remaining points follow in their order)."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    queues = [list(np.flatnonzero(labels == c)) for c in classes]
    out = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return np.asarray(out, dtype=np.int64)


def _read_speech(path):
    """Raw speech for an extractor observation: a folder of ``.wav`` files (name order), one
    ``.wav``, a text file listing wav paths (one a line, relative to its folder), or an ``.npz``
    with ``frames`` ``(F, D)`` MFCC frames and ``lengths`` ``(N,)`` frames per utterance."""
    if os.path.isdir(path):
        wavs = sorted(f for f in os.listdir(path) if f.lower().endswith(".wav"))
        if not wavs:
            raise ValueError(f"--data {path}: the folder holds no .wav file")
        return [os.path.join(path, f) for f in wavs]
    low = path.lower()
    if low.endswith(".wav"):
        return [path]
    if low.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            if not {"frames", "lengths"} <= set(z.files):
                raise ValueError(f"--data {path}: speech frames need arrays 'frames' (F, D) and 'lengths' (N,), "
                                 f"the file holds {z.files}")
            frames, lengths = z["frames"], z["lengths"]
        if frames.ndim != 2 or lengths.ndim != 1 or lengths.dtype.kind not in "iu" or (lengths < 1).any() \
                or int(lengths.sum()) != len(frames):
            raise ValueError(f"--data {path}: 'lengths' must be positive integers summing to the {len(frames)} rows "
                             f"of 'frames' (F, D); got frames {frames.shape}, lengths {lengths.shape} "
                             f"summing to {int(lengths.sum()) if lengths.dtype.kind in 'iu' else '?'}")
        return datasets.split_by_lengths(frames, lengths)
    if low.endswith(".txt"):
        with open(path) as f:
            names = [ln.strip() for ln in f if ln.strip()]
        if not names:
            raise ValueError(f"--data {path}: the list of wav files is empty")
        return [os.path.join(os.path.dirname(path), p) for p in names]
    raise ValueError(f"--data {path}: speech must be a folder of .wav files, a .wav, a .txt list of wav files or an "
                     ".npz of MFCC 'frames' and 'lengths'")


def _read_array(path):
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            if len(z.files) != 1:
                raise ValueError(f"{path} holds {len(z.files)} arrays ({z.files}); give one array per --data")
            return z[z.files[0]]
    return np.loadtxt(path, ndmin=2)


#: said of data that ``--order cyclic`` arranged by their true labels (scores on them are not fair)
_LABEL_ORDER = "cyclic order set by the true labels"


def load_recognition_data(specs, obs_names, data_dir=None, n=None, category_path=None, speech_names=()):
    """Observations and labels for ``serket-pyro recog``.

    ``specs``: each ``mnist-test`` (the 10,000 MNIST test images / 255 and their labels, for the
    first observation), ``tutorial`` (the tutorial images, then its speech if the graph has a
    second observation) or
    ``[KEY=]PATH`` (.npy, single-array .npz or text; KEY an observation name or system key,
    otherwise the next observation).  An observation in ``speech_names`` (computed from speech by
    an extractor saved with the graph) takes raw speech instead: ``sad-test`` (the 2,200 UCI
    Spoken Arabic Digit test utterances, 22 speakers not in the tutorial, and their digits),
    ``tutorial`` (the tutorial's utterances) or a path (:func:`_read_speech`).  Returns
    ``(observations dict, category or None, description)``.
    """
    obs, category, desc = {}, None, []
    free = list(obs_names)

    def next_free(spec):
        if not free:
            raise ValueError(f"--data {spec}: every observation of the graph {list(obs_names)} already has data")
        return free.pop(0)

    for spec in specs:
        if spec == "mnist-test":
            require_data_file(data_dir, "mnist.npz")
            d = datasets.load_mnist("test", root=data_dir)
            obs[next_free(spec)] = np.asarray(d.images, dtype=np.float32) / 255.0
            category = np.asarray(d.labels)
            desc.append("MNIST test images")
        elif spec == "sad-test":
            key = next((k for k in free if k in speech_names), None)
            if key is None:
                raise ValueError("--data sad-test: the graph has no free speech observation (one computed from speech "
                                 "by an extractor saved with the graph)")
            free.remove(key)
            require_data_file(data_dir, "spoken_arabic_digit.npz")
            d = datasets.load_spoken_arabic_digit("test", root=data_dir)
            obs[key] = d.utterances()
            category = np.asarray(d.digit)
            desc.append("UCI Spoken Arabic Digit test utterances (MFCC)")
        elif spec == "tutorial":
            images, speech, cat, source = load_inputs(data_dir, None, offline_fallback=False)
            obs[next_free(spec)] = images
            if free and speech is not None:  # speech only for a graph with a second observation
                key = next_free(spec)
                obs[key] = datasets.load_tutorial_speech(root=data_dir).utterances if key in speech_names else speech
            category = cat
            desc.append(source)
        else:
            key, sep, path = spec.partition("=")
            if not sep:
                key, path = free[0] if free else None, spec
            if key is None:
                raise ValueError(f"--data {spec}: every observation of the graph {list(obs_names)} already has data")
            if key in free:
                free.remove(key)
            obs[key] = _read_speech(path) if key in speech_names else _read_array(path)
            desc.append(os.path.basename(path))
    if category_path is not None:
        category = _read_array(category_path).reshape(-1)
    if n is not None:
        obs = {k: v[:n] for k, v in obs.items()}
        category = None if category is None else category[:n]
    return obs, category, ", ".join(desc)


def recognise(folder, args):
    """``serket-pyro recog``: load the saved graph in recognition mode on new data and run it.
    Returns ``(system, seconds, description)``."""
    from ..persistence import load_graph, read_graph_info

    torch.set_num_threads(args.threads)
    info = read_graph_info(folder)
    entries = [e for e in info["modules"] if "observation" in e]
    keys = {n: k for k, n in ((info.get("system") or {}).get("keys") or [])}
    names = [keys.get(e["name"], e["name"]) for e in entries]
    speech_names = [keys.get(e["name"], e["name"]) for e in entries if e["observation"].get("input") == "speech"]
    obs, category, desc = load_recognition_data(args.data, names, args.data_dir, None, args.category, speech_names)
    order = args.order
    if order == "cyclic":
        if category is None:
            raise ValueError("--order cyclic needs true labels (--category or a built-in data set)")
        idx = cyclic_order(category)
        obs = {k: [v[i] for i in idx] if isinstance(v, list) else v[idx] for k, v in obs.items()}
        category = category[idx]
        desc += f" ({_LABEL_ORDER})"
    if args.n is not None:
        obs = {k: v[:args.n] for k, v in obs.items()}
        category = None if category is None else category[:args.n]
    set_output_root(args.output)
    set_run_id(None)
    set_seed(args.seed)
    system = load_graph(folder, obs, mode="recog", category=category, output_root=args.output,
                        exclude=args.exclude or ())
    missing = [k for k in names if k not in obs]
    if missing:
        desc += f"; missing modalities {missing} (zero counts)"
    sizes = {k: len(v) for k, v in obs.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"recog: the observations have different numbers of data points {sizes}; use --n")
    first = next((v for v in obs.values() if not isinstance(v, list)), np.zeros((next(iter(sizes.values())), 0)))
    write_run_info(args.output, {"command": "recog", "graph": os.path.abspath(folder), "mode": "recog",
                                 "result": system.result_module.name, "checkpoint_dir": None, "data": args.data,
                                 "order": order, "exclude": args.exclude or [], "n": len(first),
                                 "seed": args.seed, "source": desc},
                   category, first if first.ndim == 2 and first.shape[1] == 784 else None)
    t0 = time.perf_counter()
    system.fit(n_iter=args.iterations, seed=args.seed, progress=not args.no_progress)
    return system, time.perf_counter() - t0, desc


def format_summary(system, seconds: float, source: str) -> str:
    """One screen: each module's scores and folder, the result module first."""
    lines = [f"{system.name}: {len(system.history)} outer iterations in {seconds:.1f} s on {source}"]
    head = f"{'module':<22}{'accuracy':>10}{'greedy':>9}{'ARI':>8}{'NMI':>8}{'empty':>7}{'largest':>9}  folder"
    lines.append(head)
    lines.append("-" * len(head))
    summ = system.summary()
    keys = [system.result] + [k for k in summ if k != system.result]
    for k in keys:
        s = summ[k]
        # class occupancy: empty classes and the largest class's share of the points
        occ = (f"{int(s['n_empty_classes']):>7}{s['largest_class_share']:>9.3f}" if "n_empty_classes" in s
               else f"{'':>16}")
        if "accuracy" in s:
            unfair = "  (labels set the order: not a fair score)" if _LABEL_ORDER in source else ""
            lines.append(f"{s['name']:<22}{s['accuracy']:>10.3f}{s['greedy_accuracy']:>9.3f}{s['ari']:>8.3f}"
                         f"{s['nmi']:>8.3f}{occ}  {os.path.relpath(s['folder'])}{unfair}")
        else:
            lines.append(f"{s['name']:<22}{'':>35}{occ}  {os.path.relpath(s['folder'])}")
    for flag in dict.fromkeys(system.flags):
        lines.append(f"warning: {flag}")
    r = summ[system.result]
    if "accuracy" in r and _LABEL_ORDER in source:
        lines.append(f"result ({r['name']}): accuracy {r['accuracy']:.3f} NOT A FAIR SCORE: the true labels set the "
                     "order of the points (--order cyclic), and a Markov model reads the labels from that order; "
                     "use --order given (or --exclude mm) for an accuracy")
    elif "accuracy" in r:
        md = getattr(system.result_module, "mode", "learn")
        lines.append(f"result ({r['name']}): accuracy {r['accuracy']:.3f} "
                     f"(original's greedy metric {r['greedy_accuracy']:.3f}), class_{md}.txt and acc_{md}.txt "
                     f"in {os.path.relpath(r['folder'])}")
    return "\n".join(lines)


def print_result(title: str, result, iterations: int, seconds: float) -> dict:
    """Print an example's closing lines (scores of the result module and where its files are)."""
    scores = result.metrics_  # written by the module: acc_learn.txt, metrics_learn.json
    print(f"{title}: {iterations} iterations in {seconds:.1f} s")
    if "accuracy" in scores:
        print(f"accuracy {scores['accuracy']:.3f} (Hungarian), {scores['greedy_accuracy']:.3f} (original greedy), "
              f"ARI {scores['ari']:.3f}, NMI {scores['nmi']:.3f}")
    print(f"files: {result.output_dir} (class_learn.txt, acc_learn.txt, Pdz_learn.txt)")
    return scores
