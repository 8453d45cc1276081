"""Writing a module's classification results (``class``, ``acc``, ``Pdz`` files) and scoring them."""

from __future__ import annotations

import numpy as np
import torch

from . import metrics
from .output import OutputWriter

__all__ = ["write_classification"]


def write_classification(writer: OutputWriter, probs, category=None, mode: str = "learn",
                         class_alias: str | None = None) -> dict:
    """Write ``Pdz_<mode>.txt`` (N x K probabilities), ``class_<mode>.txt`` and, given true
    labels, ``acc_<mode>.txt`` and ``metrics_<mode>.json``.

    Args:
        writer: the module's :class:`~serket_pyro.output.OutputWriter`.
        probs: ``(N, K)`` class probabilities, rows sum to 1.
        category: ``(N,)`` true labels or ``None``.
        mode: ``"learn"`` or ``"recog"`` (file suffix, as in the original).
        class_alias: also write ``class_<mode>.txt`` as ``<class_alias>_<mode>.txt`` (the original
            MLDA's ``categories_<mode>.txt``).

    Returns:
        metrics: class occupancy of the predicted classes, with or without labels:
        ``n_empty_classes`` (of the ``K`` columns, classes no point is assigned to) and
        ``largest_class_share`` (the largest class's fraction of the points; a collapse shows as
        1.0); with ``category`` also ``accuracy`` (optimal one-to-one label mapping),
        ``greedy_accuracy`` (the original's swap search), ``ari`` and ``nmi``.
        ``class_<mode>.txt`` holds the predicted classes relabelled by the optimal mapping when
        ``category`` is given (as the original relabels them), raw class indices otherwise.
    """
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().numpy()
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    writer.savetxt(f"Pdz_{mode}.txt", probs)
    sizes = np.bincount(pred, minlength=probs.shape[1])
    occupancy = {"n_empty_classes": int((sizes == 0).sum()),
                 "largest_class_share": float(sizes.max() / max(len(pred), 1)) if len(pred) else 0.0}
    names = [f"class_{mode}.txt"] + ([f"{class_alias}_{mode}.txt"] if class_alias else [])
    if category is None:
        for name in names:
            writer.savetxt(name, pred)
        return occupancy
    result = {**metrics.summarize(category, pred), **occupancy}
    for name in names:
        writer.savetxt(name, metrics.relabel(category, pred))
    writer.savetxt(f"acc_{mode}.txt", np.array([result["accuracy"]]), fmt="%.6f")
    writer.save_json(f"metrics_{mode}.json", result)
    return result
