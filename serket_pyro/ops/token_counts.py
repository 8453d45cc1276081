"""``TokenCounts``: the log-likelihood of a document's word counts under a word distribution."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

__all__ = ["TokenCategorical", "TokenCounts"]


class TokenCounts(TorchDistribution):
    """Counts ``n_v`` of i.i.d. tokens drawn from ``probs``: ``log p(n) = sum_v n_v log probs_v``.

    The bag-of-words likelihood of LDA with the per-token topics summed out (``probs = theta @
    phi``), without the multinomial coefficient (a constant of the data), so that it equals the
    sum of the tokens' ``Categorical`` log-probabilities of :meth:`serket_pyro.modules.mlda.MLDA.model`.
    Real (fractional) counts are allowed.  Only for observed sites (no sampling).

    Args:
        probs: ``(..., V)`` word probabilities (rows summing to 1).
    """

    arg_constraints = {"probs": constraints.simplex}
    support = constraints.independent(constraints.nonnegative, 1)

    def __init__(self, probs: torch.Tensor, validate_args=None):
        self.probs = probs
        super().__init__(probs.shape[:-1], probs.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(TokenCounts, _instance)
        new.probs = self.probs.expand(torch.Size(batch_shape) + self.event_shape)
        super(TokenCounts, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.xlogy(value, self.probs).sum(-1)


class TokenCategorical(dist.Categorical):
    """A class that counts as ``weight`` tokens: ``log p(c) = weight * log probs_c``.

    How a class child (a GMM's class) enters an MLDA document with ``weights[i]`` tokens, as its
    class message does in message passing; enumerable (Pyro needs one scale for all the sites of
    an enumerated group, so the weight lives in the distribution, not in ``poutine.scale``).

    Args:
        probs: ``(..., K)`` class probabilities.
        weight: tokens per document (default 1: a plain ``Categorical``).
    """

    def __init__(self, probs: torch.Tensor, weight: float = 1.0, validate_args=None):
        self.weight = float(weight)
        super().__init__(probs=probs, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(TokenCategorical, _instance)
        new = super().expand(batch_shape, _instance=new)
        new.weight = self.weight
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.weight * super().log_prob(value)
