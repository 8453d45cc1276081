"""Plots of a run's output folder (PNG files, matplotlib's Agg backend: no display needed).

:func:`make_report` is what ``serket-pyro report FOLDER`` calls.  It reads the files the modules
wrote (``module%03d_<name>/[iteration/]...``) and, when present, the metadata the ``serket-pyro``
commands leave next to them (``run.json``: mode, result module, checkpoint folder;
``report_inputs.npz``: true labels and a few input images), and draws:

* ``metrics.png``: accuracy and ARI of every scored module per outer iteration (from the
  checkpoint's ``metrics.jsonl`` or, without one, each module's ``NNN/metrics_<mode>.json``);
* ``objectives.png``: each module's own objective per outer iteration (the GMM's and MLDA's
  log-likelihood, the Markov model's log-likelihood, minus the VAE's loss): convergence without
  labels;
* ``loss_<module>.png``: the VAE's loss per epoch over the whole run (``NNN/loss_learn.txt``);
* ``confusion_<module>.png``: for every scored module, the confusion matrix after the best
  one-to-one label mapping (:func:`serket_pyro.metrics.best_mapping`), rows = true class;
* ``latent_<module>.png``: the VAE latents ``z_<mode>.txt`` projected on their first two principal
  components (SVD), coloured by true class and, in a second panel, by the class a scored module
  of the same points predicts;
* ``transitions_<module>.png``: a Markov model's ``trans_prob_<mode>.txt`` as a heat map, states
  ordered and labelled by the true class the child's best mapping gives them (a perfect cycle is
  then the shifted diagonal);
* ``reconstructions_<module>.png``: a few inputs (top row; deskewed as the VAE saw them when the
  run deskewed) and the VAE's ``x_hat_<mode>.txt`` (bottom row) as 28 x 28 images.
"""

from __future__ import annotations

import glob
import json
import os
import re

import numpy as np
import torch

from .. import metrics as _metrics

__all__ = [
    "REPORT_INPUTS",
    "RUN_INFO",
    "collect_metrics",
    "make_report",
    "pca_2d",
    "plot_confusion",
    "plot_latents",
    "plot_losses",
    "plot_metrics",
    "plot_objectives",
    "plot_reconstructions",
    "plot_transitions",
    "state_order",
]

RUN_INFO = "run.json"
REPORT_INPUTS = "report_inputs.npz"
_MODULE_DIR = re.compile(r"module(\d+)_(.+)")


def _figure(width=6.0, height=4.5):
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return os.fspath(path)


# ------------------------------------------------------------------------------ data
def module_dirs(root) -> dict[str, str]:
    """``{module name: folder}`` of the ``module%03d_*`` folders under ``root``, in index order."""
    out = {}
    for d in sorted(os.listdir(root)):
        if _MODULE_DIR.fullmatch(d) and os.path.isdir(os.path.join(root, d)):
            out[d] = os.path.join(root, d)
    return out


def collect_metrics(root, mode: str = "learn", checkpoint_dir=None,
                    run_id: str | None = None) -> dict[str, list[tuple[int, dict]]]:
    """Per-iteration metrics ``{module name: [(iteration, metrics), ...]}``.

    From ``<checkpoint_dir>/metrics.jsonl`` when it exists (the last record of each iteration
    wins: a resumed run appends again), else from every module's ``NNN/metrics_<mode>.json``.
    Given ``run_id``, records that name another run are left out."""
    def other_run(rec):
        return run_id is not None and isinstance(rec, dict) and rec.get("run_id", run_id) != run_id

    out: dict[str, dict[int, dict]] = {}
    path = None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), "metrics.jsonl")
    if path is not None and os.path.isfile(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if other_run(rec):
                    continue
                it = int(rec.get("iteration", -1))
                for k, v in rec.items():
                    if isinstance(v, dict):
                        out.setdefault(k, {})[it] = v
    else:
        for name, folder in module_dirs(root).items():
            for sub in sorted(glob.glob(os.path.join(folder, "[0-9][0-9][0-9]", f"metrics_{mode}.json"))):
                try:
                    with open(sub) as f:
                        rec = json.load(f)
                except (OSError, json.JSONDecodeError):
                    continue
                if not other_run(rec):
                    out.setdefault(name, {})[int(os.path.basename(os.path.dirname(sub)))] = rec
    return {k: sorted(v.items()) for k, v in out.items()}


def pca_2d(z) -> np.ndarray:
    """``(N, L)`` -> ``(N, 2)`` scores on the first two principal components (exact SVD for
    ``L <= 256``, :func:`torch.pca_lowrank` beyond)."""
    z = torch.as_tensor(np.asarray(z, dtype=np.float64))
    if z.dim() == 1:
        z = z.unsqueeze(1)
    if z.shape[1] == 1:
        return torch.cat([z - z.mean(0), torch.zeros_like(z)], 1).numpy()
    q = min(2, z.shape[1], z.shape[0])
    zc = z - z.mean(0)
    if z.shape[1] <= 256:  # exact: SVD of the centred (N, L) matrix is cheap for latent sizes
        v = torch.linalg.svd(zc, full_matrices=False).Vh[:q].T
    else:  # randomized (Halko et al. 2011), for wide inputs
        v = torch.pca_lowrank(z, q=q, center=True, niter=4)[2]
    scores = zc @ v[:, :q]
    if q < 2:
        scores = torch.cat([scores, torch.zeros(z.shape[0], 2 - q, dtype=scores.dtype)], 1)
    return scores.numpy()


# ----------------------------------------------------------------------------- plots
def plot_metrics(per_module: dict, path, keys=("accuracy", "ari")) -> str | None:
    """Lines of ``keys`` per outer iteration, one colour per module; ``None`` if nothing to plot."""
    series = {n: v for n, v in per_module.items() if any(keys[0] in m for _, m in v)}
    if not series:
        return None
    fig = _figure(4.0 * len(keys), 3.5)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        for name, recs in series.items():
            its = [it + 1 for it, m in recs if key in m]
            ax.plot(its, [m[key] for _, m in recs if key in m], marker="o", label=name)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("outer iteration")
        ax.set_ylabel(key)
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("scores per outer iteration")
    return _save(fig, path)


def plot_objectives(per_module: dict, path) -> str | None:
    """Each module's own ``objective`` per outer iteration, one panel per module (the scales
    differ by orders of magnitude); ``None`` if no module reports one."""
    from matplotlib.ticker import MaxNLocator

    series = {n: [(it + 1, m["objective"]) for it, m in v if "objective" in m] for n, v in per_module.items()}
    series = {n: v for n, v in series.items() if v}
    if not series:
        return None
    fig = _figure(3.2 * len(series), 3.2)
    for ax, (name, pts) in zip(fig.subplots(1, len(series), squeeze=False)[0], series.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("outer iteration")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("each module's own objective (higher is better)")
    return _save(fig, path)


def plot_losses(losses, path, title="", boundaries=()) -> str:
    """A loss per epoch (``losses: (E,)``) with dashed lines at the outer iterations' starts."""
    fig = _figure(6.0, 3.5)
    ax = fig.subplots()
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=1.2)
    for b in boundaries:
        ax.axvline(b + 0.5, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("epoch (dashed: a new outer iteration)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.set_title(title or "loss per epoch")
    return _save(fig, path)


def plot_confusion(true, pred, path, title="") -> str:
    """Confusion matrix (rows: true class, columns: predicted class mapped by the best one-to-one
    mapping), counts in the cells."""
    true = np.asarray(true, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    mapping = _metrics.best_mapping(true, pred)
    n_true = int(true.max()) + 1
    mapped = np.array([mapping.get(int(p), -1) for p in pred])
    extra = int((mapped < 0).any())  # clusters left out of the matching: one "unmatched" column
    mapped = np.where(mapped < 0, n_true, mapped)
    cm = _metrics.confusion_matrix(true, mapped, n_true, n_true + extra)
    fig = _figure(6.0, 5.0)
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xlabel("predicted class (best mapping)" + (", last column: unmatched" if extra else ""))
    ax.set_ylabel("true class")
    ax.set_xticks(range(cm.shape[1]))
    ax.set_yticks(range(cm.shape[0]))
    acc = float(np.trace(cm[:, :n_true])) / max(len(true), 1)
    ax.set_title(f"{title} accuracy {acc:.3f}".strip())
    return _save(fig, path)


def plot_latents(z, labels, path, title="", predicted=None, predicted_by="") -> str:
    """2-D PCA projection of latents ``(N, L)`` coloured by ``labels`` (or one colour) and, when
    ``predicted`` (``(N,)`` classes, mapped to true classes where labels are known) is given, a
    second panel coloured by it."""
    xy = pca_2d(z)
    panels = [(labels, "true class")] + ([(predicted, f"predicted by {predicted_by}".strip())]
                                         if predicted is not None else [])
    given = [np.asarray(c) for c, _ in panels if c is not None]
    lo = min((int(c.min()) for c in given), default=0)  # one colour scale: a class looks the same
    hi = max((int(c.max()) for c in given), default=0)  # in both panels
    fig = _figure(5.5 * len(panels), 5.0)
    for ax, (c, what) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        if c is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.6)
        else:
            c = np.asarray(c)
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=c, cmap="tab10" if hi - lo < 10 else "tab20", s=4,
                            alpha=0.7, vmin=lo - 0.5, vmax=hi + 0.5)
            fig.colorbar(sc, ax=ax, ticks=np.unique(c), label=what)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.set_title(what if len(panels) > 1 else (title or "latents (PCA)"), fontsize=9)
    if len(panels) > 1:
        fig.suptitle(title or "latents (PCA)")
    return _save(fig, path)


def state_order(mapping: dict, K: int) -> tuple[np.ndarray, list[str]]:
    """Order of ``K`` states for display: those mapped to a true class (``mapping``: state -> true
    class, -1 unmatched, as :func:`serket_pyro.metrics.best_mapping`) by that class, then the
    others; tick labels ``"<class> (s<state>)"`` or ``"- (s<state>)"``."""
    key = [(mapping.get(k, -1) < 0, mapping.get(k, -1), k) for k in range(K)]
    order = np.array([k for *_, k in sorted(key)], dtype=np.int64)
    ticks = [f"{mapping[k]} (s{k})" if mapping.get(k, -1) >= 0 else f"- (s{k})" for k in order]
    return order, ticks


def plot_transitions(A, path, title="", order=None, ticks=None) -> str:
    """Transition matrix ``(K, K)`` (rows: from) as a heat map, rows and columns permuted by
    ``order`` (default: state index) and labelled by ``ticks``."""
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    order = np.arange(A.shape[0]) if order is None else np.asarray(order)
    A = A[np.ix_(order, order)]
    ticks = [str(k) for k in order] if ticks is None else list(ticks)
    fig = _figure(6.0, 5.2)
    ax = fig.subplots()
    im = ax.imshow(A, cmap="viridis", vmin=0.0, vmax=max(float(A.max()), 1e-12))
    fig.colorbar(im, ax=ax, shrink=0.8, label="probability")
    what = "state" if ticks == [str(k) for k in order] else "true class (state)"
    ax.set_xlabel(f"to {what}")
    ax.set_ylabel(f"from {what}")
    ax.set_xticks(range(A.shape[1]), ticks, rotation=90, fontsize=7)
    ax.set_yticks(range(A.shape[0]), ticks, fontsize=7)
    ax.set_title(title or "transition matrix", fontsize=9)
    return _save(fig, path)


def plot_reconstructions(x, x_hat, path, image_shape=(28, 28), title="") -> str:
    """Inputs (top row) and reconstructions (bottom row); rows of ``x``/``x_hat`` are images."""
    x = np.asarray(x, dtype=np.float64)
    x_hat = np.asarray(x_hat, dtype=np.float64)
    n = min(len(x), len(x_hat), 10)
    d = x.shape[1]
    shape = tuple(image_shape) if int(np.prod(image_shape)) == d else (1, d)
    fig = _figure(1.2 * n, 2.8)
    axes = fig.subplots(2, n, squeeze=False)
    for j in range(n):
        for row, a in enumerate((x, x_hat)):
            ax = axes[row, j]
            ax.imshow(a[j].reshape(shape), cmap="gray", vmin=0.0, vmax=max(1.0, float(a.max())), aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, 0].set_ylabel("input")
        axes[1, 0].set_ylabel("x_hat")
    fig.suptitle(title or "reconstructions")
    return _save(fig, path)


# ---------------------------------------------------------------------------- report
def _read_run_info(root) -> dict:
    path = os.path.join(root, RUN_INFO)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError):
            return {}
    return {}


def _loadtxt(path):
    """An output array by its ``.txt`` name (also when it was written as ``.npy``), or ``None``."""
    from ..output import load_output_array

    return load_output_array(os.path.dirname(path), os.path.basename(path))


def _losses(folder) -> tuple[np.ndarray, list[int]] | None:
    """The run's losses per epoch from every ``NNN/loss_learn.txt`` of a module folder, in order,
    and the epoch indices where each outer iteration starts; ``None`` without any."""
    parts = []
    for sub in sorted(glob.glob(os.path.join(folder, "[0-9][0-9][0-9]", "loss_learn.txt"))):
        try:
            parts.append(np.atleast_1d(np.loadtxt(sub)))
        except (OSError, ValueError):
            continue
    if not parts:
        return None
    starts = np.cumsum([0] + [len(p) for p in parts[:-1]])
    return np.concatenate(parts), [int(b) for b in starts[1:]]


def make_report(root, out_dir=None, checkpoint_dir=None) -> tuple[list[str], str]:
    """Draw every plot that the files under ``root`` allow; returns ``(png paths, summary text)``.

    Args:
        root: a run's output folder (holding ``module%03d_*`` folders).
        out_dir: where the PNGs go (default ``<root>/report``).
        checkpoint_dir: folder with ``metrics.jsonl`` (default: the one recorded in ``run.json``).
    """
    root = os.fspath(root)
    dirs = module_dirs(root)
    if not dirs:
        raise ValueError(f"{root} holds no module%03d_* output folders (is it a run's --output folder?)")
    info = _read_run_info(root)
    mode = info.get("mode") or ("learn" if any(os.path.isfile(os.path.join(d, "Pdz_learn.txt"))
                                               or os.path.isfile(os.path.join(d, "z_learn.txt"))
                                               for d in dirs.values()) else "recog")
    out_dir = os.path.join(root, "report") if out_dir is None else os.fspath(out_dir)
    checkpoint_dir = checkpoint_dir if checkpoint_dir is not None else info.get("checkpoint_dir")
    inputs = {}
    p = os.path.join(root, REPORT_INPUTS)
    if os.path.isfile(p):
        with np.load(p, allow_pickle=False) as z:
            inputs = {k: z[k] for k in z.files}
    category = inputs.get("category")

    pngs = []
    per_it = collect_metrics(root, mode, checkpoint_dir, info.get("run_id"))
    for r in (plot_metrics(per_it, os.path.join(out_dir, "metrics.png")),
              plot_objectives(per_it, os.path.join(out_dir, "objectives.png"))):
        if r:
            pngs.append(r)

    # every scored module's predictions (and their best mapping to the true classes)
    predictions = {}
    for name, folder in dirs.items():
        probs = _loadtxt(os.path.join(folder, f"Pdz_{mode}.txt"))
        if probs is not None:
            pred = probs.argmax(1)
            known = category is not None and len(category) == len(pred)
            predictions[name] = (pred, probs.shape[1], _metrics.best_mapping(category, pred) if known else None)

    rows = []
    result = info.get("result")
    scored = list(predictions)
    for name, folder in dirs.items():
        kind = _MODULE_DIR.fullmatch(name).group(2)
        m = {}
        mp = os.path.join(folder, f"metrics_{mode}.json")
        if os.path.isfile(mp):
            with open(mp) as f:
                m = json.load(f)
        n_it = len(glob.glob(os.path.join(folder, "[0-9][0-9][0-9]")))
        rows.append((name, n_it, m))
        if name in predictions and predictions[name][2] is not None:
            pngs.append(plot_confusion(category, predictions[name][0], os.path.join(out_dir, f"confusion_{name}.png"),
                                       title=f"{name} ({mode})"))
        z = _loadtxt(os.path.join(folder, f"z_{mode}.txt"))
        if z is not None:
            labels = category if category is not None and len(category) == len(z) else None
            # the first scored module after this one that classifies the same points (its child)
            later = [n for n in scored if n > name and len(predictions[n][0]) == len(z)]
            pred = by = None
            if later:
                by = later[0]
                pred, _, mapping = predictions[by]
                if mapping is not None:  # colours then match the true-class panel
                    pred = np.array([mapping.get(int(k), -1) for k in pred])
                    pred = np.where(pred < 0, pred.max() + 1, pred)
            pngs.append(plot_latents(z, labels, os.path.join(out_dir, f"latent_{name}.png"),
                                     title=f"{name}: z_{mode}.txt, PCA", predicted=pred, predicted_by=by or ""))
            loss = _losses(folder)
            if loss is not None:
                pngs.append(plot_losses(loss[0], os.path.join(out_dir, f"loss_{name}.png"),
                                        title=f"{name}: loss per epoch", boundaries=loss[1]))
            xh = _loadtxt(os.path.join(folder, f"x_hat_{mode}.txt"))
            idx, imgs = inputs.get("sample_index"), inputs.get("sample_images")
            if xh is not None and idx is not None and imgs is not None and int(idx.max()) < len(xh) \
                    and imgs.shape[1] == xh.shape[1]:
                shown = "inputs"
                if info.get("deskew"):  # the VAE reconstructs what it was given: the deskewed image
                    from ..features.deskew import deskew

                    imgs, shown = deskew(imgs), "deskewed inputs"
                pngs.append(plot_reconstructions(imgs, xh[idx], os.path.join(out_dir, f"reconstructions_{name}.png"),
                                                 title=f"{name}: {shown} and x_hat_{mode}.txt"))
        A = _loadtxt(os.path.join(folder, f"trans_prob_{mode}.txt"))
        if A is not None and kind:
            # the states are the child's classes: order them by the child's mapping (the last
            # scored module before this one with as many classes)
            child = [n for n in scored if n < name and predictions[n][1] == A.shape[0]
                     and predictions[n][2] is not None]
            order = ticks = None
            note = ""
            if child:
                order, ticks = state_order(predictions[child[-1]][2], A.shape[0])
                note = f"\nstates by {child[-1]}'s class mapping"
            pngs.append(plot_transitions(A, os.path.join(out_dir, f"transitions_{name}.png"),
                                         title=f"{name}: trans_prob_{mode}.txt{note}", order=order, ticks=ticks))
    if result not in scored:
        result = scored[-1] if scored else None

    head = f"{'module':<22}{'iters':>6}{'accuracy':>10}{'greedy':>9}{'ARI':>8}{'NMI':>8}"
    lines = [f"report of {root} ({mode} files)" + (f", {info['command']} {info.get('model', '')}".rstrip()
                                                 if info.get("command") else "")
             + (f", run {info['run_id']}" if info.get("run_id") else ""), head, "-" * len(head)]
    for name, n_it, m in rows:
        mark = " <- result" if name == result else ""
        if "accuracy" in m:
            lines.append(f"{name:<22}{n_it:>6}{m['accuracy']:>10.3f}{m.get('greedy_accuracy', float('nan')):>9.3f}"
                         f"{m.get('ari', float('nan')):>8.3f}{m.get('nmi', float('nan')):>8.3f}{mark}")
        else:
            lines.append(f"{name:<22}{n_it:>6}{'-':>10}{'-':>9}{'-':>8}{'-':>8}{mark}")
    lines.append(f"plots ({len(pngs)}): " + ", ".join(os.path.relpath(p, root) for p in pngs))
    return pngs, "\n".join(lines)
