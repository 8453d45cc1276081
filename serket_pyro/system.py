"""A connected graph of modules with a name, the module that reports the result, and ``fit``."""

from __future__ import annotations

from dataclasses import dataclass, field

from .driver import fit
from .module import Module

__all__ = ["System"]


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
            resume: bool = False, callback=None, settings: dict | None = None) -> list[dict]:
        """Run ``n_iter`` outer iterations bottom-up (see :func:`serket_pyro.fit`)."""
        self.history = fit(*self.modules.values(), n_iter=n_iter, seed=seed, progress=progress,
                           checkpoint_dir=checkpoint_dir, resume=resume, callback=callback, settings=settings)
        return self.history

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
