"""Diagonal Cholesky factors as a constraint of the joint program's parameters.

``JointProgram(..., constraints={(gmm, "scale_tril"): diagonal_cholesky})`` gives a GMM diagonal
class covariances (VaDE's): the parameter is the log of the diagonal, and ``transform_to`` maps
it to ``diag(exp(u))``.  The inverse of a full lower-triangular factor ``T`` keeps the variances
of ``T T^T`` (the row norms of ``T``), so a start from full covariances keeps each dimension's
variance and drops the correlations.
"""

from __future__ import annotations

import torch
from torch.distributions import constraints, transform_to
from torch.distributions.transforms import Transform

__all__ = ["diagonal_cholesky"]


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
