"""A connected graph of modules with a name, the module that reports the result, and ``fit``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .driver import fit
from .module import Module

__all__ = ["System"]


def _json_like(v) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


@dataclass
class System:
    """An integrated model: its modules (in construction order) and the module whose
    classification is the system's result (the tutorials read it from that module's folder).

    Attributes:
        name: e.g. ``"vae_gmm_mm"``.
        modules: ``{short name: module}``, e.g. ``{"obs": ..., "vae": ..., "gmm": ..., "mm": ...}``.
        result: key of the module whose ``metrics_`` are the system's result.
    """

    name: str
    modules: dict[str, Module]
    result: str
    history: list = field(default_factory=list)

    def __getitem__(self, key: str) -> Module:
        return self.modules[key]

    @property
    def result_module(self) -> Module:
        return self.modules[self.result]

    def fit(self, n_iter: int = 5, seed: int | None = None, progress: bool = True, checkpoint_dir=None,
            resume: bool = False, callback=None, settings: dict | None = None,
            distributed: bool | str = False) -> list[dict]:
        """Run ``n_iter`` outer iterations bottom-up (see :func:`serket_pyro.fit`)."""
        self.history = fit(*self.modules.values(), n_iter=n_iter, seed=seed, progress=progress,
                           checkpoint_dir=checkpoint_dir, resume=resume, callback=callback, settings=settings,
                           distributed=distributed)
        return self.history

    def predict_proba(self, observations, *, category=None, exclude=(), n_iter: int = 1, seed: int | None = 0,
                      output_root=None):
        """Class probabilities of the result module for new data, with the learned parameters
        frozen: a recognition copy of this graph (every learnable module in ``mode="recog"``) is
        run on ``observations``; this system is not changed.

        Parameters
        ----------
        observations : list or dict
            New data of every observation, as :func:`~serket_pyro.persistence.load_graph` takes
            them: a list in construction order, or a dict by this system's keys (``"obs1"``) or
            module names; a modality read only by MLDA modules may be left out (``None``).
        category : array_like of int, shape (M,), optional
            True labels: the copy's modules then score themselves (``metrics_``).
        exclude : sequence of str
            Modules to leave out (top of the graph), e.g. ``["mm"]`` for points in no order.
        n_iter : int, default 1
            Outer iterations of the recognition run (messages between the frozen modules).
        seed : int or None, default 0
            Seed of the recognition run (the VAE's sampling, MLDA's Gibbs sweeps).
        output_root : path, optional
            Where the copy writes its ``*_recog`` files; default a temporary folder, removed.

        Returns
        -------
        probs : ndarray, shape (M, K)
            Rows sum to 1.
        """
        import tempfile

        from .module import connected_modules
        from .output import load_output_array
        from .persistence import load_graph, save_graph

        mods = connected_modules(*self.modules.values())
        # networks given as objects are not saved (only their class name): hand the copy the same ones
        objects = {m.name: {k: getattr(m, k) for k in type(m)._object_params if not _json_like(getattr(m, k, None))}
                   for m in mods if m.learnable}
        with tempfile.TemporaryDirectory(prefix="serket-pyro-predict-") as tmp:
            # the copy is made exactly as a saved graph is loaded: same checks, same state
            save_graph(os.path.join(tmp, "graph"), self)
            out = os.fspath(output_root) if output_root is not None else os.path.join(tmp, "out")
            rec = load_graph(os.path.join(tmp, "graph"), observations, mode="recog", category=category,
                             output_root=out, exclude=exclude, overrides={k: v for k, v in objects.items() if v},
                             allowed_packages=tuple({type(m).__module__ for m in mods}))
            rec.fit(n_iter=n_iter, seed=seed, progress=False)
            probs = load_output_array(rec.result_module.output_dir, "Pdz_recog.txt")
        self.recognition_ = rec  # the copy, for its modules' outputs and metrics_
        if probs is None:
            raise ValueError(f"{rec.result_module.name} reports no class probabilities")
        return probs

    def predict(self, observations, **kwargs):
        """Classes ``(M,)`` of new data: the argmax of :meth:`predict_proba` (same arguments)."""
        return self.predict_proba(observations, **kwargs).argmax(1)

    @property
    def flags(self) -> list[str]:
        """Warnings of the run, in order: modules whose objective fell two outer iterations in a
        row (:func:`serket_pyro.driver.falling_objectives`)."""
        return [f for record in self.history for f in record.get("flags", [])]

    def summary(self) -> dict:
        """Metrics of every module after the last update, plus where its files are, and
        ``"flagged": True`` for a module named in :attr:`flags`."""
        flagged = {f.split(":", 1)[0] for f in self.flags}
        return {
            key: {"name": m.name, "folder": m.output_dir, **m.metrics_,
                  **({"flagged": True} if m.name in flagged else {})}
            for key, m in self.modules.items() if m.learnable
        }
