"""Constraints that change how the joint program represents a parameter.

``JointProgram(..., constraints={(gmm, "scale_tril"): diagonal_cholesky})`` gives a GMM diagonal
class covariances (VaDE's): the parameter is the log of the diagonal, and ``transform_to`` maps
it to ``diag(exp(u))``.  The inverse of a full lower-triangular factor ``T`` keeps the variances
of ``T T^T`` (the row norms of ``T``), so a start from full covariances keeps each dimension's
variance and drops the correlations.

``{(gmm, "weights"): softmax_simplex}`` (or a Markov model's ``"trans_prob"``, row by row)
represents probabilities by ``K`` logits, ``softmax(u)``, instead of ``torch``'s default
stick-breaking ``K - 1`` coordinates: every class's logit moves alike under Adam, where
stick-breaking ties the later classes' weights to the earlier ones' fractions.
"""

from __future__ import annotations

import torch
from torch.distributions import constraints, transform_to
from torch.distributions.transforms import Transform

__all__ = ["diagonal_cholesky", "softmax_simplex"]


class _DiagonalCholesky(constraints.Constraint):
    """Diagonal matrices with a positive diagonal, ``(..., L, L)``."""

    event_dim = 2

    def check(self, value):
        diag = value.diagonal(dim1=-2, dim2=-1)
        off = value - torch.diag_embed(diag)
        return (diag > 0).all(-1) & (off == 0).flatten(-2).all(-1)


diagonal_cholesky = _DiagonalCholesky()


class _DiagonalCholeskyTransform(Transform):
    """``u (..., L, L) -> diag_embed(exp(diag(u)))`` (off-diagonal entries of ``u`` unused);
    inverse ``T -> diag_embed(log |row of T|)``."""

    domain = constraints.independent(constraints.real, 2)
    codomain = diagonal_cholesky

    def __eq__(self, other):
        return isinstance(other, _DiagonalCholeskyTransform)

    def _call(self, x):
        return torch.diag_embed(x.diagonal(dim1=-2, dim2=-1).exp())

    def _inverse(self, y):
        return torch.diag_embed(y.pow(2).sum(-1).sqrt().log())


@transform_to.register(_DiagonalCholesky)
def _transform_to_diagonal_cholesky(constraint):
    return _DiagonalCholeskyTransform()


class _SoftmaxSimplex(constraints.Constraint):
    """Probability vectors over the last dimension (``torch``'s simplex), represented by logits."""

    event_dim = 1

    def check(self, value):
        return constraints.simplex.check(value)


softmax_simplex = _SoftmaxSimplex()


class _SoftmaxTransform(Transform):
    """``u (..., K) -> softmax(u)``; inverse ``p -> log p - mean(log p)`` (the logits summing to 0)."""

    domain = constraints.independent(constraints.real, 1)
    codomain = softmax_simplex

    def __eq__(self, other):
        return isinstance(other, _SoftmaxTransform)

    def _call(self, x):
        return x.softmax(-1)

    def _inverse(self, y):
        u = y.log()
        return u - u.mean(-1, keepdim=True)


@transform_to.register(_SoftmaxSimplex)
def _transform_to_softmax_simplex(constraint):
    return _SoftmaxTransform()
