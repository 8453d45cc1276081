"""TtoT: tail-to-tail, one category shared by several modules (the original ``TtoT`` module).

Two (or more) modules that classify the same data points, e.g. an MLDA on speech and a GMM on
images (the original's ``examples/number_recog``), are made to agree through a shared category
``c_n`` with an arrow to each of them (a tail-to-tail node).  Each module numbers its classes in
its own way, so the modules' classes are first matched to the first module's.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..messages import ClassProbs
from ..module import Module
from ..validation import check_positive_float

__all__ = ["TtoT"]


class TtoT(Module):
    """Combine the class messages of the connected modules for a category they share.

    With the children's forward messages ``q_m(k | x_m)`` (``(N, K)`` class probabilities of
    module ``m``) and the class matching ``sigma_m`` (module ``m``'s class ``sigma_m(k)`` is the
    first module's class ``k``; ``sigma_0`` = identity), the shared category ``c_n`` with a
    uniform prior and the modules' evidence taken as independent given ``c_n`` has

    * posterior (the forward message, in the first module's numbering)
      ``p(c_n = k | x_1..x_M) ∝ prod_m r_m(k)``, and
    * backward message to module ``m`` (in module ``m``'s numbering): the evidence of the
      *other* modules, ``b_m(sigma_m(k)) ∝ prod_{m' != m} r_{m'}(k)``, which module ``m`` uses
      as the prior of its classes,

    where ``r_m(k) = (q_m(sigma_m(k) | x_m) + eps) / (1 + K eps)`` is the message smoothed by
    ``eps`` (no module can veto a class with a zero).  Matching: ``sigma_m`` maximises the
    number of points whose most probable classes agree with the first module's (the Hungarian
    algorithm on the ``K x K`` table of argmax pairs; the original searched by pairwise swaps).
    A child not updated yet counts as uniform ``q_m`` (the original's rule), so the original's
    update order (``lda1``, ``tt``, ``vae1``, ``gmm1``, ``tt``) works from the first iteration.

    Parameters
    ----------
    name : str, default "tt"
        Short name (the original's).
    smoothing : float, default 0.01
        ``eps`` above (the original's value).
    align : bool, default True
        Match the modules' classes first; ``False`` takes their numberings as the same.
    category : array_like of int, shape (N,), optional
        True labels, to score the shared category (``acc`` files, ``metrics_``).

    Attributes
    ----------
    permutations_ : list of ndarray of int, shape (K,)
        ``sigma_m`` of every child (the first is the identity).
    """

    _fitted = ()
    input_kinds = (ClassProbs,)
    test_args: dict = {}
    test_n_children = 2

    def __init__(self, name: str = "tt", smoothing: float = 0.01, align: bool = True, category=None):
        super().__init__(name)
        self.smoothing = check_positive_float(smoothing, "smoothing", self.name, allow_zero=True)
        if not isinstance(align, (bool, np.bool_)):
            raise ValueError(f"{self.name}: align must be True or False, got {align!r}")
        self.align = bool(align)
        self.category = category
        self.permutations_: list[np.ndarray] | None = None

    def get_observations(self):
        """The children's class messages; a child not updated yet sends uniform probabilities."""
        if not self.children:
            return super().get_observations()  # the base's error: not connected
        msgs = [c.forward_msg for c in self.children]
        sent = [m for m in msgs if isinstance(m, ClassProbs)]
        if any(m is None for m in msgs):
            if not sent:
                return super().get_observations()  # the base's error: nothing to combine yet
            msgs = [ClassProbs.uniform(*sent[0].log_probs.shape) if m is None else m for m in msgs]
        return msgs

    def _read_inputs(self):
        msgs = self.get_observations()
        if len(msgs) < 2:
            raise ValueError(f"{self.name}: TtoT combines the classes of at least two modules, "
                             f"connect two or more (got {len(msgs)})")
        shapes = []
        for c, m in zip(self.children, msgs):
            if not isinstance(m, ClassProbs):
                raise ValueError(f"{self.name}: {c.name} sends a {m.kind} message; TtoT needs class probabilities "
                                 "(a GMM's or an MLDA's)")
            shapes.append(tuple(m.log_probs.shape))
        if len(set(shapes)) > 1:
            raise ValueError(f"{self.name}: the children's class messages have different shapes "
                             f"{dict(zip((c.name for c in self.children), shapes))}; they must share N and K")
        return [m.log_probs.exp().to(torch.float64) for m in msgs]

    def _read_backward(self, inputs):
        return None  # a root: nothing comes from above

    def _infer(self, probs, backward) -> None:
        K = probs[0].shape[1]
        perms = [np.arange(K)]
        ref = probs[0].argmax(1).numpy()
        for p in probs[1:]:
            if not self.align:
                perms.append(np.arange(K))
                continue
            table = np.zeros((K, K))
            np.add.at(table, (ref, p.argmax(1).numpy()), 1.0)  # [first's class, this module's class]
            rows, cols = linear_sum_assignment(-table)
            sigma = np.empty(K, dtype=np.int64)
            sigma[rows] = cols
            perms.append(sigma)
        self.permutations_ = perms

    def _recognise(self, probs, backward) -> None:
        self._infer(probs, backward)  # nothing learned: the matching is of these data

    def _smoothed_logs(self, probs) -> torch.Tensor:
        """``(M, N, K)`` log ``r_m(k)`` in the first module's numbering."""
        K = probs[0].shape[1]
        r = [(p[:, torch.as_tensor(s)] + self.smoothing) / (1.0 + K * self.smoothing)
             for p, s in zip(probs, self.permutations_)]
        return torch.log(torch.stack(r))

    def _forward_message(self, probs, backward):
        self.posterior_ = ClassProbs(self._smoothed_logs(probs).sum(0))
        return self.posterior_

    def _backward_messages(self, probs, backward) -> list:
        logs = self._smoothed_logs(probs)
        total = logs.sum(0)
        out = []
        for m, sigma in enumerate(self.permutations_):
            others = total - logs[m]  # first module's numbering
            own = torch.empty_like(others)
            own[:, torch.as_tensor(sigma)] = others  # module m's class sigma(k) gets shared class k
            out.append(ClassProbs(own))
        return out

    def _class_probs(self, probs, backward):
        return self.posterior_.log_probs.exp()

