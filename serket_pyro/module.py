"""The Serket module graph: :class:`Module`, :class:`Observation` and ``connect``.

Nakamura, Nagai, Taniguchi, "SERKET: An Architecture for Connecting Stochastic Models to Realize a
Large-Scale Cognitive Model", Frontiers in Neurorobotics 12:25 (2018).

A module holds

* its *children* (``parent.connect(child_a, child_b)``; the order fixes the order of observations
  and of backward messages),
* one *forward* message (what it sends up to every parent),
* one *backward* message per parent (what each parent last sent down).  A module with several
  parents combines them by the product rule (:func:`serket_pyro.messages.combine`) instead of
  keeping only the last one, as the original did.

Every module constructed, Observations included, takes the next number of a process-wide counter,
and is named ``module%03d_<name>``; that name is also its output folder.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import torch

from .messages import ClassProbs, Message, PointMessage, as_tensor, combine, message_from_tensors, message_to_tensors
from .output import OutputWriter, get_output_root
from .validation import check_real

__all__ = ["Module", "Observation", "reset_module_counter", "connected_modules", "update_order"]

_counter = itertools.count()
#: a class message whose log-probabilities differ by no more than this within every row is flat
_FLAT_LOG_TOL = 1e-8


def reset_module_counter(start: int = 0) -> None:
    """Restart the naming counter (a fresh process starts at 0; tests and notebooks use this)."""
    global _counter
    _counter = itertools.count(start)


def _as_message(msg) -> Message:
    if isinstance(msg, Message):
        return msg
    if isinstance(msg, (np.ndarray, torch.Tensor, list, tuple)):
        return PointMessage(msg)
    raise TypeError(f"a message must be a serket_pyro.messages.Message or an array, got {type(msg).__name__}")


class Module:
    """Base class of every Serket module.

    Subclasses store hyperparameters in ``__init__`` (after calling ``super().__init__(name)``)
    and do their inference in :meth:`update`, which reads :meth:`get_observations` and
    :meth:`get_backward_msg`, then calls :meth:`set_forward_msg` and :meth:`send_backward_msgs`.

    Args:
        name: short name; the module is called ``module%03d_<name>``.
        learnable: ``False`` for modules that never update (observations).
        output_root: folder under which this module writes; default the global output root
            (:func:`serket_pyro.set_output_root`, itself defaulting to the current directory).
    """

    def __init__(self, name: str = "module", learnable: bool = True, output_root=None):
        self.index = next(_counter)
        self.name = f"module{self.index:03d}_{name}"
        self.learnable = learnable
        self.output_root = output_root
        self.children: tuple[Module, ...] = ()
        self.parents: list[Module] = []
        self._forward_msg: Message | None = None
        self._backward_msgs: dict[str, Message] = {}
        self.n_updates_ = 0
        self.metrics_: dict = {}

    # ------------------------------------------------------------------ graph
    def connect(self, *children: "Module") -> "Module":
        """Declare ``children`` (their forward messages are this module's observations).

        Raises ``ValueError`` for a child that is this module itself, that would close a cycle,
        or whose number of data points differs from the other children's.
        """
        if not children:
            raise ValueError(f"{self.name}.connect() needs at least one child module")
        for c in children:
            if not isinstance(c, Module):
                raise ValueError(
                    f"{self.name}.connect() takes modules or srk.Observation objects, got {type(c).__name__}; "
                    "wrap arrays in srk.Observation(data)"
                )
            if c is self:
                raise ValueError(f"{self.name} cannot be connected to itself")
            if self in c.descendants():
                raise ValueError(f"connecting {c.name} under {self.name} would make a cycle")
        if len(set(map(id, children))) != len(children):
            raise ValueError(f"{self.name}.connect() got the same child twice")
        sizes = {c.name: c.n_points for c in children if c.n_points is not None}
        if len(set(sizes.values())) > 1:
            detail = ", ".join(f"{k}: N={v}" for k, v in sizes.items())
            raise ValueError(f"{self.name}: children have different numbers of data points ({detail})")
        for old in self.children:
            old.parents = [p for p in old.parents if p is not self]
            old._backward_msgs.pop(self.name, None)
        self.children = tuple(children)
        for c in children:
            c.parents.append(self)
        return self

    def descendants(self) -> list["Module"]:
        """All modules below this one (children, their children, ...)."""
        out, stack, seen = [], list(self.children), set()
        while stack:
            m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            out.append(m)
            stack.extend(m.children)
        return out

    @property
    def n_points(self) -> int | None:
        """Number of data points N this module works on (from its children), or None if unknown."""
        for c in self.children:
            n = c.n_points
            if n is not None:
                return n
        return None

    # --------------------------------------------------------------- messages
    @property
    def forward_msg(self) -> Message | None:
        """The message this module last sent up to its parents."""
        return self._forward_msg

    def get_observations(self) -> list[Message]:
        """Forward messages of the children, in ``connect`` order."""
        if not self.children:
            raise ValueError(f"{self.name} has no children: call {self.name}.connect(...) before update()")
        obs = []
        for c in self.children:
            if c.forward_msg is None:
                raise ValueError(
                    f"{self.name} needs the output of {c.name}, which has not been updated yet: "
                    "update children before their parents"
                )
            obs.append(c.forward_msg)
        return obs

    def get_backward_msg(self) -> Message | None:
        """Product of the backward messages of all parents, or ``None`` if none arrived yet."""
        return combine(self._backward_msgs[p.name] for p in self.parents if p.name in self._backward_msgs)

    def get_class_backward_msg(self, N: int, K: int) -> ClassProbs | None:
        """The parents' combined message, checked to be class probabilities of shape ``(N, K)``;
        ``None`` before any parent has sent one, or when every row is flat (a parent that found no
        structure, e.g. a Markov chain on data without order, leaves the update as it would be
        without it); ``ValueError`` naming this module otherwise."""
        msg = self.get_backward_msg()
        if msg is None:
            return None
        if not isinstance(msg, ClassProbs):
            raise ValueError(f"{self.name}: the backward message from the parent must be class probabilities "
                             f"(ClassProbs N x K), got {type(msg).__name__}")
        if tuple(msg.log_probs.shape) != (N, K):
            raise ValueError(f"{self.name}: the parent's backward message has shape {tuple(msg.log_probs.shape)}, "
                             f"expected (N, K) = ({N}, {K})")
        lp = msg.log_probs
        if bool(((lp - lp.amax(-1, keepdim=True)).abs() <= _FLAT_LOG_TOL).all()):
            return None  # flat: says nothing, so the update is the one without a parent
        return msg

    def get_backward_msgs(self) -> dict[str, Message]:
        """Backward messages per parent name (not combined)."""
        return dict(self._backward_msgs)

    def set_forward_msg(self, msg) -> None:
        msg = _as_message(msg)
        n = self.n_points
        if n is not None and msg.N != n:
            raise ValueError(f"{self.name} produced a forward message for {msg.N} data points, expected {n}")
        self._forward_msg = msg

    def send_backward_msgs(self, msgs) -> None:
        """Send one message to each child, in ``connect`` order (``None``: send nothing)."""
        msgs = list(msgs)
        if len(msgs) != len(self.children):
            raise ValueError(f"{self.name} sent {len(msgs)} backward messages to {len(self.children)} children")
        checked = []
        for child, msg in zip(self.children, msgs):
            if msg is None:
                checked.append(None)
                continue
            msg = _as_message(msg)
            n = child.n_points
            if n is not None and msg.N != n:
                raise ValueError(
                    f"{self.name} sent a message for {msg.N} data points to {child.name}, which has {n}"
                )
            checked.append(msg)
        for child, msg in zip(self.children, checked):
            if msg is None:
                child._backward_msgs.pop(self.name, None)
            else:
                child._backward_msgs[self.name] = msg

    # ---------------------------------------------------------------- outputs
    @property
    def output_dir(self) -> str:
        return os.path.join(os.fspath(self.output_root) if self.output_root is not None else get_output_root(),
                            self.name)

    def writer(self, iteration: int | None = None) -> OutputWriter:
        """Writer for this update's files (default iteration: the number of the current update)."""
        return OutputWriter(self.output_dir, self.n_updates_ if iteration is None else iteration)

    # ----------------------------------------------------------- life cycle
    def update(self) -> None:
        """Run this module's inference once (one outer iteration)."""
        raise NotImplementedError(f"{type(self).__name__}.update() is not implemented")

    def get_config(self) -> dict:
        """JSON-serialisable hyperparameters (for saving a graph)."""
        return {}

    def state_dict(self) -> dict:
        """Learned state as a flat dict of tensors (for checkpoints; loadable with weights_only)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise NotImplementedError(f"{type(self).__name__} cannot load state")

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """:meth:`state_dict` plus the messages this module holds and has sent (for checkpoints)."""
        out = {f"state/{k}": v for k, v in self.state_dict().items()}
        if self._forward_msg is not None:
            out.update({f"forward/{k}": v for k, v in message_to_tensors(self._forward_msg).items()})
        for i, c in enumerate(self.children):
            msg = c._backward_msgs.get(self.name)
            if msg is not None:
                out.update({f"backward{i}/{k}": v for k, v in message_to_tensors(msg).items()})
        return out

    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`full_state_dict`."""
        def sub(prefix):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

        self.load_state_dict(sub("state/"))
        fwd = sub("forward/")
        if fwd:
            self._forward_msg = message_from_tensors(fwd)
        for i, c in enumerate(self.children):
            b = sub(f"backward{i}/")
            if b:
                c._backward_msgs[self.name] = message_from_tensors(b)

    def __repr__(self) -> str:
        kids = ", ".join(c.name for c in self.children)
        return f"{type(self).__name__}(name={self.name!r}, children=[{kids}])"


class Observation(Module):
    """A leaf holding data: its forward message is the data, ``(N, D)`` rows = data points.

    Args:
        data: array-like with N >= 1 rows; 1-D arrays become ``(N, 1)``, arrays with more than two
            axes (e.g. images ``(N, 28, 28)``) are flattened to ``(N, D)``.  Must be finite.
        name: short name (``obs`` as in the original).
    """

    def __init__(self, data, name: str = "obs"):
        super().__init__(name, learnable=False)
        if isinstance(data, Message):
            msg = data
        else:
            check_real(data, "data", self.name)
            try:
                t = as_tensor(data) if not isinstance(data, torch.Tensor) else data
            except (TypeError, ValueError) as e:
                raise ValueError(f"{self.name}: data must be a numeric array ({e})") from None
            if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64,
                                                          torch.uint8, torch.bool)):
                raise ValueError(f"{self.name}: data must be numeric, got dtype {t.dtype}")
            if t.dim() == 0:
                raise ValueError(f"{self.name}: data must have at least one axis (N data points), got a scalar")
            if t.shape[0] == 0:
                raise ValueError(f"{self.name}: data are empty (0 data points)")
            if t.dim() > 2:
                t = t.reshape(t.shape[0], -1)
            if not t.is_floating_point():
                t = t.to(torch.float64)
            if t.dim() == 2 and t.shape[1] == 0:
                raise ValueError(f"{self.name}: data have 0 dimensions per data point")
            if not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise ValueError(f"{self.name}: data contain {bad} NaN or infinite value(s)")
            msg = PointMessage(t)
        self._forward_msg = msg

    @property
    def data(self) -> torch.Tensor:
        return self._forward_msg.value if isinstance(self._forward_msg, PointMessage) else self._forward_msg

    @property
    def n_points(self) -> int:
        return self._forward_msg.N

    def connect(self, *children):
        raise ValueError(f"{self.name} is an Observation: it has no children")

    def update(self) -> None:
        """Observations never change."""


def connected_modules(*modules: Module) -> list[Module]:
    """Every module connected to ``modules`` (through children or parents), in construction order."""
    seen, stack = {}, list(modules)
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen[id(m)] = m
        stack.extend(m.children)
        stack.extend(m.parents)
    return sorted(seen.values(), key=lambda m: m.index)


def update_order(*modules: Module) -> list[Module]:
    """Learnable modules of the connected graph, children before parents (ties: construction order)."""
    allm = connected_modules(*modules)
    depth = {}

    def height(m):  # longest path down to a leaf
        if id(m) not in depth:
            depth[id(m)] = 0 if not m.children else 1 + max(height(c) for c in m.children)
        return depth[id(m)]

    return sorted((m for m in allm if m.learnable), key=lambda m: (height(m), m.index))

