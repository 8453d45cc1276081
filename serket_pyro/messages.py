"""Typed messages that travel between Serket modules.

The original Serket passes bare numpy arrays whose meaning depends on the pair of modules.  Here
every message is a small immutable object that knows its number of data points ``N`` and how to
combine with another message of the same kind (the product rule used when a module has several
parents).

* :class:`ClassProbs`: class probabilities per data point, kept in log space.
  ``log_probs: (N, K)``; ``probs`` rows sum to 1.
* :class:`GaussianMessage`: an independent Normal per data point and dimension,
  ``loc: (N, D)``, ``scale: (N, D) > 0``.  The GMM sends this to the VAE as its prior on z, and the
  VAE sends its posterior q(z | x) upwards in this form.
* :class:`PointMessage`: plain values, ``value: (N, D)``: observed data, samples, reconstructions
  or word counts.

All tensors are ``torch.Tensor``; numpy arrays are converted on construction.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch

__all__ = [
    "Message",
    "ClassProbs",
    "GaussianMessage",
    "PointMessage",
    "as_tensor",
    "combine",
    "message_to_tensors",
    "message_from_tensors",
]


def as_tensor(x, dtype=None, device=None) -> torch.Tensor:
    """Convert ``x`` (array-like or tensor) to a tensor; float64 by default for non-tensors."""
    if isinstance(x, torch.Tensor):
        t = x
        if dtype is not None:
            t = t.to(dtype)
    else:
        t = torch.as_tensor(np.asarray(x), dtype=dtype or torch.float64)
    if device is not None:
        t = t.to(device)
    return t


def _check_finite(t: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{what} contains {bad} NaN or infinite value(s)")


class Message:
    """Base class of all messages: ``N`` data points (rows).

    A message also behaves like the array the original Serket passed: ``np.asarray(msg)`` (and
    ``np.savetxt(f, msg)``) give its :meth:`numpy` values (class probabilities, Gaussian means,
    points), ``msg.shape == (N, dim)``, ``len(msg) == N``, ``msg[i]`` indexes those values, and
    arithmetic with numbers and arrays (``msg * 2.0``, ``msg + arr``, ``arr - msg``) returns a
    plain numpy array (a torch tensor when the other operand is one): the result is no longer a
    message.  Between two messages ``*`` is the product rule (two class or two Gaussian
    messages), never the elementwise product.
    """

    kind = "message"
    __array_priority__ = 1000  # numpy defers ``arr * msg`` to ``msg.__rmul__``

    @property
    def N(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def dim(self) -> int:
        """Size of the second axis (K classes or D dimensions)."""
        raise NotImplementedError  # pragma: no cover

    def values(self) -> torch.Tensor:  # pragma: no cover - overridden
        """``(N, dim)`` tensor the array view shows (probabilities, means or points)."""
        raise NotImplementedError

    # ------------------------------------------------------------ array view
    @property
    def shape(self) -> tuple[int, int]:
        return (self.N, self.dim)

    ndim = 2

    def __len__(self) -> int:
        return self.N

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __getitem__(self, index):
        return self.numpy()[index]

    def _arith(self, other, op, reflected=False):
        if isinstance(other, Message):
            other = other.values()
        if isinstance(other, torch.Tensor):
            a = self.values()
        else:
            a, other = self.numpy(), np.asarray(other)
        return op(other, a) if reflected else op(a, other)

    def __mul__(self, other):
        if isinstance(other, Message):
            raise TypeError(f"cannot combine a {self.kind} message with a {other.kind} message")
        return self._arith(other, operator.mul)

    def __rmul__(self, other):
        return self._arith(other, operator.mul, True)

    def __add__(self, other):
        return self._arith(other, operator.add)

    def __radd__(self, other):
        return self._arith(other, operator.add, True)

    def __sub__(self, other):
        return self._arith(other, operator.sub)

    def __rsub__(self, other):
        return self._arith(other, operator.sub, True)

    def __truediv__(self, other):
        return self._arith(other, operator.truediv)

    def __rtruediv__(self, other):
        return self._arith(other, operator.truediv, True)

    def __pow__(self, other):
        return self._arith(other, operator.pow)

    def __neg__(self):
        return -self.numpy()

    def to(self, device) -> "Message":  # pragma: no cover - overridden
        raise NotImplementedError

    def numpy(self) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(N={self.N}, dim={self.dim})"


class ClassProbs(Message):
    """Class probabilities of ``N`` data points over ``K`` classes, stored in log space.

    Args:
        log_probs: ``(N, K)`` unnormalised log-probabilities (``-inf`` allowed for impossible
            classes, but every row needs one finite entry).  They are normalised on construction.

    Use :meth:`from_probs` for probabilities (rows are normalised; zero rows are an error).
    The product of two messages (``a * b``) is the normalised elementwise product, i.e. the
    posterior that combines both independent pieces of evidence.
    """

    kind = "class probabilities"

    def __init__(self, log_probs):
        lp = as_tensor(log_probs)
        if lp.dim() != 2:
            raise ValueError(f"class log-probabilities must be 2-D (N, K), got shape {tuple(lp.shape)}")
        if lp.shape[0] == 0 or lp.shape[1] == 0:
            raise ValueError(f"class log-probabilities must be non-empty, got shape {tuple(lp.shape)}")
        if bool(torch.isnan(lp).any()) or bool((lp == math.inf).any()):
            raise ValueError("class log-probabilities contain NaN or +inf")
        norm = torch.logsumexp(lp, dim=-1, keepdim=True)
        if not bool(torch.isfinite(norm).all()):
            raise ValueError("some rows of the class probabilities are all zero")
        self._log_probs = lp - norm

    @classmethod
    def from_probs(cls, probs) -> "ClassProbs":
        """Build from ``probs: (N, K)`` non-negative (rows need not sum to 1)."""
        p = as_tensor(probs)
        if p.dim() != 2:
            raise ValueError(f"class probabilities must be 2-D (N, K), got shape {tuple(p.shape)}")
        _check_finite(p, "class probabilities")
        if bool((p < 0).any()):
            raise ValueError("class probabilities contain negative values")
        return cls(torch.log(p))

    @classmethod
    def uniform(cls, N: int, K: int, dtype=torch.float64, device=None) -> "ClassProbs":
        return cls(torch.zeros(N, K, dtype=dtype, device=device))

    @property
    def log_probs(self) -> torch.Tensor:
        """``(N, K)`` normalised log-probabilities."""
        return self._log_probs

    @property
    def probs(self) -> torch.Tensor:
        """``(N, K)`` probabilities, rows sum to 1."""
        return self._log_probs.exp()

    @property
    def N(self) -> int:
        return self._log_probs.shape[0]

    @property
    def K(self) -> int:
        return self._log_probs.shape[1]

    dim = K

    def __mul__(self, other: Message) -> "ClassProbs":
        if not isinstance(other, ClassProbs):
            return super().__mul__(other)
        if other.log_probs.shape != self.log_probs.shape:
            raise ValueError(
                f"cannot multiply class messages of shapes {tuple(self.log_probs.shape)} "
                f"and {tuple(other.log_probs.shape)}"
            )
        return ClassProbs(self._log_probs + other.log_probs.to(self._log_probs))

    def values(self) -> torch.Tensor:
        return self.probs

    def to(self, device) -> "ClassProbs":
        return ClassProbs(self._log_probs.to(device))

    def numpy(self) -> np.ndarray:
        return self.probs.detach().cpu().numpy()

    def argmax(self) -> np.ndarray:
        """``(N,)`` most probable class per data point."""
        return self._log_probs.argmax(-1).cpu().numpy()


class GaussianMessage(Message):
    """Independent Normal distributions, one per data point and dimension.

    Args:
        loc: ``(N, D)`` means.
        scale: ``(N, D)`` standard deviations (> 0), or a scalar / ``(D,)`` broadcast to ``(N, D)``.

    The product of two Gaussian messages is the (renormalised) precision-weighted Gaussian.
    """

    kind = "Gaussian"

    def __init__(self, loc, scale=1.0):
        loc = as_tensor(loc)
        if loc.dim() != 2:
            raise ValueError(f"Gaussian message loc must be 2-D (N, D), got shape {tuple(loc.shape)}")
        _check_finite(loc, "Gaussian message loc")
        scale = as_tensor(scale, dtype=loc.dtype, device=loc.device)
        try:
            scale = torch.broadcast_to(scale, loc.shape).clone()
        except RuntimeError:
            raise ValueError(
                f"Gaussian message scale of shape {tuple(scale.shape)} does not match loc {tuple(loc.shape)}"
            ) from None
        _check_finite(scale, "Gaussian message scale")
        if bool((scale <= 0).any()):
            raise ValueError("Gaussian message scale must be positive")
        self.loc = loc
        self.scale = scale

    @property
    def N(self) -> int:
        return self.loc.shape[0]

    @property
    def dim(self) -> int:
        return self.loc.shape[1]

    def __mul__(self, other: Message) -> "GaussianMessage":
        if not isinstance(other, GaussianMessage):
            return super().__mul__(other)
        if other.loc.shape != self.loc.shape:
            raise ValueError(
                f"cannot multiply Gaussian messages of shapes {tuple(self.loc.shape)} and {tuple(other.loc.shape)}"
            )
        p1, p2 = self.scale.pow(-2), other.scale.to(self.scale).pow(-2)
        prec = p1 + p2
        loc = (p1 * self.loc + p2 * other.loc.to(self.loc)) / prec
        return GaussianMessage(loc, prec.rsqrt())

    def sample(self) -> torch.Tensor:
        """One reparameterised draw, ``(N, D)``."""
        return self.loc + self.scale * torch.randn_like(self.loc)

    def values(self) -> torch.Tensor:
        return self.loc

    def to(self, device) -> "GaussianMessage":
        return GaussianMessage(self.loc.to(device), self.scale.to(device))

    def numpy(self) -> np.ndarray:
        return self.loc.detach().cpu().numpy()


class PointMessage(Message):
    """Plain values: ``value: (N, D)`` (a 1-D array is taken as ``(N, 1)``).

    Observed data, word counts, samples and reconstructions travel as point messages.  Two point
    messages cannot be multiplied: a module with several parents sending points keeps them apart.
    """

    kind = "point"

    def __init__(self, value):
        v = as_tensor(value) if not isinstance(value, torch.Tensor) else value
        if v.dim() == 1:
            v = v.unsqueeze(-1)
        if v.dim() != 2:
            raise ValueError(f"point message must be 2-D (N, D), got shape {tuple(v.shape)}")
        if v.shape[0] == 0 or v.shape[1] == 0:
            raise ValueError(f"point message must be non-empty, got shape {tuple(v.shape)}")
        _check_finite(v, "point message")
        self.value = v

    @property
    def N(self) -> int:
        return self.value.shape[0]

    @property
    def dim(self) -> int:
        return self.value.shape[1]

    def values(self) -> torch.Tensor:
        return self.value

    def to(self, device) -> "PointMessage":
        return PointMessage(self.value.to(device))

    def numpy(self) -> np.ndarray:
        return self.value.detach().cpu().numpy()


def message_to_tensors(msg: Message) -> dict[str, torch.Tensor]:
    """Flat dict of tensors describing ``msg`` (for checkpoints loadable with ``weights_only``)."""
    if isinstance(msg, ClassProbs):
        return {"class_log_probs": msg.log_probs}
    if isinstance(msg, GaussianMessage):
        return {"gaussian_loc": msg.loc, "gaussian_scale": msg.scale}
    if isinstance(msg, PointMessage):
        return {"point_value": msg.value}
    raise TypeError(f"cannot serialise a {type(msg).__name__}")


def message_from_tensors(d: dict[str, torch.Tensor]) -> Message:
    """Inverse of :func:`message_to_tensors`."""
    if "class_log_probs" in d:
        return ClassProbs(d["class_log_probs"])
    if "gaussian_loc" in d:
        return GaussianMessage(d["gaussian_loc"], d["gaussian_scale"])
    if "point_value" in d:
        return PointMessage(d["point_value"])
    raise ValueError(f"not a serialised message: keys {sorted(d)}")


def combine(messages):
    """Product of several messages of the same kind (``None`` entries are skipped).

    Returns ``None`` for no messages.  Raises ``TypeError`` for messages of different kinds.
    """
    messages = [m for m in messages if m is not None]
    if not messages:
        return None
    out = messages[0]
    for m in messages[1:]:
        out = out * m
    return out
