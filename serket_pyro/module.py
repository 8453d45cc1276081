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

import inspect
import itertools
import numbers
import os

import numpy as np
import torch

from . import distributed as _dist
from .messages import ClassProbs, Message, PointMessage, as_tensor, combine, message_from_tensors, message_to_tensors
from .classification import write_classification
from .output import OutputWriter, get_output_root, get_run_id, remove_stale_iterations
from .safe_files import (check_loaded_finite, check_loaded_probabilities, read_json, read_tensor_file, resolve_inside,
                         tensor_file_bytes)
from .validation import check_category, check_real

__all__ = ["Module", "Observation", "reset_module_counter", "connected_modules", "update_order"]

_counter = itertools.count()
#: the model file every learning update writes into its iteration folder (and the module's folder)
MODEL_FILE, MODEL_INFO = "model.pt", "model.json"
_MODEL_FORMAT = "serket_pyro.model"
#: the sender of a backward message set by hand on a module without a parent
_USER = "user"
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
    """Base class of every Serket module, and the contract a module implements.

    A module is a node of the graph: its children's forward messages are its observations, it
    sends one forward message up to its parents and one backward message down to each child.
    :meth:`update` is a template method (as scikit-learn's ``BaseMixture.fit``): it does the
    plumbing once and calls the module's hooks.  One ``update()``:

    1. ``inputs = self._read_inputs()``: the children's messages (checked to be of the kinds in
       ``input_kinds`` first), validated;
    2. ``backward = self._read_backward(inputs)``: the parents' combined message, validated;
    3. ``category`` (if the module has one) is checked against the number of data points;
    4. ``self._infer(inputs, backward)`` in ``mode="learn"``, ``self._recognise(inputs, backward)``
       in ``mode="recog"`` (default: refuse when the fitted attributes are missing);
    5. ``self.set_forward_msg(self._forward_message(inputs, backward))`` and
       ``self.send_backward_msgs(self._backward_messages(inputs, backward))``;
    6. files in ``<output root>/module%03d_<name>/<iteration>/`` (iteration = :attr:`n_updates_`,
       ``000``, ``001``, ...; the latest also at the top): the classification files of
       ``self._class_probs(...)`` when it returns probabilities (``Pdz``, ``class``; with
       ``category`` also ``acc`` and ``metrics``, see
       :func:`~serket_pyro.classification.write_classification`), then
       ``self._write_outputs(writer, inputs, backward)``, then in learn mode the model file
       (``model.pt``: :meth:`state_dict`; ``model.json``: class, config, size and SHA-256) that
       :meth:`load_model` reads (the original's ``load_dir``);
    7. ``metrics_`` = the classification scores plus ``self._metrics(inputs, backward)``, also
       written as ``metrics_<mode>.json`` with the run's id (:func:`~serket_pyro.output.get_run_id`;
       the first update in learn mode removes the iteration folders of an earlier run first)
       (``"objective"``: nats, higher is better, read by :func:`serket_pyro.fit`);
    8. ``n_updates_ += 1``.

    Every error is a ``ValueError`` that starts with the module's name (``module002_gmm: ...``),
    raised before any file of the update is written.

    **What to implement.**  ``__init__(self, <hyperparameters>, ...)`` calling
    ``super().__init__("<short name>")`` and storing every parameter as an attribute of the same
    name (as scikit-learn's ``get_params``); the hooks ``_infer`` (learning) and
    ``_forward_message``; as needed ``_read_inputs``, ``_read_backward``, ``_recognise``,
    ``_backward_messages``, ``_class_probs``, ``_write_outputs`` and ``_metrics``; and the class
    attribute ``_fitted``, the names of the learned attributes (arrays or tensors, lists or dicts
    of them, or floats), e.g. ``_fitted = ("weights_", "means_")``, and ``_row_state``, those of
    them with one row per data point (a data-parallel run holds only its rows of them).

    **What you get for free.**  ``mode`` (``"learn"``/``"recog"``) and :meth:`_check_choice`;
    the iteration folders and files; ``metrics_`` and the history of :func:`serket_pyro.fit`;
    :meth:`get_config` (the ``__init__`` parameters), :meth:`state_dict` and
    :meth:`load_state_dict` (the ``_fitted`` attributes, checked finite, and probabilities where
    ``_state_rules`` says so; override :meth:`_check_state` for shapes), hence checkpoints and
    resuming (``fit(..., checkpoint_dir=..., resume=True)``), :func:`~serket_pyro.save_graph` and
    :func:`~serket_pyro.load_graph` (recognition of new data in a fresh process: pass
    ``allowed_packages=["your_package"]``); ``output_root`` (a module's ``__init__`` need not
    take it); the model file of every learning update and the original's recognition workflow
    (``load_dir=``, ``mode="recog"`` reading the module's own folder,
    ``update(load_trained_model=...)``, see :meth:`load_model`).  A module overrides
    :meth:`state_dict` / :meth:`load_state_dict` only for state
    that is not plain arrays (the VAE's networks) and :meth:`update` not at all.

    **Joint hooks** (optional: only for :func:`serket_pyro.joint.joint_program`, which compiles a
    connected graph into ONE Pyro model and guide).  Each module owns one latent site per data
    point, named :meth:`joint_site` (``"<module name>.z"``); a parent's distribution is placed on
    its child's site, so e.g. the GMM's component IS the prior of the VAE's ``z`` and the GMM's
    class IS a token of an MLDA.  A module declares ``joint_role``: ``"class"`` (a discrete latent
    with :meth:`joint_size` values, enumerated in parallel), ``"latent"`` (a continuous latent
    with a guide: :meth:`joint_guide`) or ``"chain"`` (no site of its own: a Markov chain over its
    one child's site, summed by the forward algorithm); ``None`` (default): no joint hooks, and
    the compiler refuses the module naming it.  The hooks return distributions (as
    ``pyro.contrib.cevae``), written once and used by the module's own ``model()`` and by the
    joint program:

    * ``joint_size()``: values of a class, dimension of a latent (``K``, ``latent_dim``);
    * ``joint_params(child_sizes, child_values, parent_states)``: the global parameters as
      ``{name: (initial tensor, constraint)}`` (point estimates); ``child_values`` are data or
      initial latents of the children (``None`` when unknown), ``parent_states`` the number of
      classes of a class or chain parent (``None`` without one);
    * ``joint_networks(child_sizes)``: networks trained with the program (default none);
    * ``joint_local_params(N)``: per-data-point guide parameters ``{name: ((N, ...) init,
      constraint)}`` (default none);
    * ``joint_prior(params)``: the distribution of the own site without a parent;
    * ``joint_child_dist(params, value, i)``: the distribution placed on child ``i``'s site (or
      data) given the own site's ``value`` (a class may be a tensor of classes: Vindex);
    * ``joint_state_dist(params, s)``: the own site's distribution given a chain/class parent's
      state ``s`` (a ``"latent"`` module under a Markov chain);
    * ``joint_guide(params, local, observed)``: ``q`` of the own site (``"latent"`` modules), from
      the local parameters at the minibatch rows and the observed children's rows;
    * ``joint_observed(i, data)``: child ``i``'s data as this module's site reads them (scaled
      pixels, token counts; default float tensor);
    * ``joint_to_module(params, posterior)``: write the fitted parameters back into the
      ``_fitted`` attributes (``posterior``: ``(N, K)`` class log-probabilities or ``(N, L)``
      latent means), so outputs, recognition and save/load work as after message passing.

    Parameters
    ----------
    name : str, default "module"
        Short name; the module is called ``module%03d_<name>`` (also its output folder).
    learnable : bool, default True
        ``False`` for modules that never update (observations).
    output_root : str or os.PathLike, optional
        Folder under which this module writes; default the global output root
        (:func:`serket_pyro.set_output_root`, itself defaulting to the current directory).

    Attributes
    ----------
    input_kinds : tuple of type
        Class attribute: the message classes the module reads from its children (default any);
        :meth:`update` refuses others, naming the child.
    accepts_missing_observation : bool
        Class attribute: an observation whose parents all have it may be left out of
        :func:`~serket_pyro.load_graph` (it is replaced by all-zero counts: MLDA).
    _object_params : tuple of str
        Class attribute: ``__init__`` parameters holding objects (networks) that the config
        records by class name only; :func:`~serket_pyro.load_graph` needs them in ``overrides``.
    test_args : dict
        Class attribute: small constructor arguments for the contract test
        (``tests/test_module_contract.py``).
    _original_api : serket_pyro.original_api.OriginalSignature or None
        Class attribute: the original Serket's signature of this module; its ``__init__`` then
        also takes the original's positional orders and keywords (and ``load_dir``).
    _model_params : tuple of str
        Class attribute: ``__init__`` parameters a loaded model file must agree with (``K``).
    _original_class_file : str or None
        Class attribute: the original's name of ``class_<mode>.txt``, written as a copy
        (MLDA: ``categories``).
    """

    _fitted: tuple = ()
    #: the ``_fitted`` attributes with one row per data point (first axis), e.g. a GMM's
    #: ``assignments_``: ``save_graph(..., distributed=True)`` gathers them from every process
    _row_state: tuple = ()
    #: checks :meth:`load_state_dict` applies to loaded ``_fitted`` values, ``{attribute: rule}``;
    #: rule ``"probabilities"``: finite, non-negative, every row (last axis) summing to 1
    _state_rules: dict = {}
    input_kinds: tuple = (Message,)
    _object_params: tuple = ()
    #: ``__init__`` parameters the base keeps out of the config (labels are data, not settings)
    _unsaved_params = ("category", "output_root", "name")
    accepts_missing_observation = False
    test_args: dict = {}
    #: the original Serket's signature of this module (:mod:`serket_pyro.original_api`): set in a
    #: class body, its ``__init__`` also takes the original's positional orders and keywords
    _original_api = None
    #: ``__init__`` parameters a loaded model file must agree with (they fix the learned shapes)
    _model_params: tuple = ()
    #: the original's name of the ``class_<mode>.txt`` file, written as a copy (MLDA: ``categories``)
    _original_class_file: str | None = None

    #: joint role: ``"class"``, ``"latent"``, ``"chain"`` or ``None`` (no joint hooks)
    joint_role: str | None = None

    # ------------------------------------------------------------------ joint hooks (defaults)
    def _missing_joint_hook(self, hook: str, why: str = ""):
        raise ValueError(f"{self.name}: {type(self).__name__} does not implement the joint hook {hook}()"
                         f"{' (' + why + ')' if why else ''}; see 'Joint hooks' in the Module docstring")

    def joint_site(self) -> str:
        """Name of this module's latent site in the joint program: ``"<name>.z"``."""
        return f"{self.name}.z"

    def joint_size(self) -> int:
        """Classes (``"class"``) or dimension (``"latent"``) of the own site."""
        self._missing_joint_hook("joint_size")

    def joint_params(self, child_sizes, child_values, parent_states) -> dict:
        """Global parameters ``{name: (initial tensor, constraint)}`` (default none)."""
        return {}

    def joint_networks(self, child_sizes) -> list:
        """``torch.nn.Module`` s trained with the joint program (VAE: encoder, decoder; default none)."""
        return []

    def joint_local_params(self, N: int) -> dict:
        """Per-data-point guide parameters ``{name: ((N, ...) initial tensor, constraint)}``."""
        return {}

    def joint_prior(self, params):
        """Distribution of the own site without a parent."""
        self._missing_joint_hook("joint_prior", "needed at the top of a graph")

    def joint_child_dist(self, params, value, i: int):
        """Distribution placed on child ``i``'s site given the own site's ``value``."""
        self._missing_joint_hook("joint_child_dist", "needed for a module with children")

    def joint_state_dist(self, params, s):
        """Distribution of the own site given a chain/class parent's state ``s``."""
        self._missing_joint_hook("joint_state_dist", "needed under a Markov chain")

    def joint_guide(self, params, local, observed):
        """Guide ``q`` of the own site (``"latent"`` modules)."""
        self._missing_joint_hook("joint_guide", "needed for a continuous latent")

    def joint_observed(self, i: int, data: torch.Tensor) -> torch.Tensor:
        """Child ``i``'s data as this module's site reads them (default: unchanged)."""
        return data

    def joint_to_module(self, params, posterior) -> None:
        """Write the jointly fitted parameters into the ``_fitted`` attributes."""
        self._missing_joint_hook("joint_to_module")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_original_api") is not None and "__init__" in cls.__dict__:
            from .original_api import wrap_init

            wrap_init(cls, cls.__dict__["_original_api"])

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
        self._mode = "learn"

    # ------------------------------------------------------------------ checks
    @property
    def mode(self) -> str:
        """``"learn"`` (infer, files ``*_learn``) or ``"recog"`` (learned state frozen, ``*_recog``)."""
        return self._mode

    @mode.setter
    def mode(self, value) -> None:
        self._mode = self._check_choice(value, "mode", ("learn", "recog"))

    def _check_choice(self, value, what: str, choices):
        """``value`` if it is one of ``choices``, else ``ValueError`` naming this module."""
        if value not in choices:
            raise ValueError(f"{self.name}: {what} must be one of {tuple(choices)}, got {value!r}")
        return value

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
        """Forward messages of the children, in ``connect`` order (messages act as arrays:
        ``np.savetxt(f, self.get_observations()[0])``)."""
        if not self.children:
            raise ValueError(f"{self.name} has no children: call {self.name}.connect(...) before update()")
        obs = []
        for i, c in enumerate(self.children):
            if isinstance(c, Observation) and c.missing:
                obs.append(self._missing_observation(i, c))
                continue
            if c.forward_msg is None:
                raise ValueError(
                    f"{self.name} needs the output of {c.name}, which has not been updated yet: "
                    "update children before their parents"
                )
            obs.append(c.forward_msg)
        return obs

    def _missing_observation(self, i: int, child: "Observation") -> Message:
        """The message standing for ``Observation(None)`` (the original's missing modality):
        all-zero counts of width :meth:`_missing_width` for a module with
        ``accepts_missing_observation`` (MLDA), ``ValueError`` for any other."""
        if not self.accepts_missing_observation:
            raise ValueError(f"{self.name}: {child.name} holds no data (Observation(None)); only a module that "
                             "takes missing modalities (MLDA) can read it: give the data")
        n = self.n_points
        if n is None:
            raise ValueError(f"{self.name}: every child is Observation(None): at least one must hold data")
        return PointMessage(torch.zeros((n, self._missing_width(i)), dtype=torch.float64))

    def _missing_width(self, i: int) -> int:
        """Hook: number of features of child ``i`` when it is missing (default 1: zero counts of
        any width say nothing)."""
        return 1

    def get_backward_msg(self) -> Message | None:
        """Product of the backward messages of all parents (and of one set by the user with
        :meth:`set_backward_msg` on a module without a parent), or ``None`` if none arrived yet."""
        keys = [p.name for p in self.parents] + [_USER]
        return combine(self._backward_msgs[k] for k in keys if k in self._backward_msgs)

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
        """Set the message sent up (a :class:`~serket_pyro.messages.Message`; an array becomes a
        point message)."""
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

    # the original Serket's names
    def get_forward_msg(self) -> Message | None:
        """The original's name of :attr:`forward_msg`."""
        return self._forward_msg

    def set_backward_msg(self, msg, parent: "Module | None" = None) -> None:
        """The original's ``set_backward_msg``: a parent sets the backward message of this module
        (``child.set_backward_msg(msg)`` from inside the parent).  ``parent``: the sender,
        default the only parent (or a pseudo-parent ``"user"`` for a module without one)."""
        msg = _as_message(msg)
        n = self.n_points
        if n is not None and msg.N != n:
            raise ValueError(f"{self.name}: backward message for {msg.N} data points, this module has {n}")
        if parent is None and len(self.parents) > 1:
            raise ValueError(f"{self.name} has {len(self.parents)} parents: say which one sends (parent=...)")
        key = parent.name if parent is not None else (self.parents[0].name if self.parents else _USER)
        self._backward_msgs[key] = msg

    def get_name(self) -> str:
        """The original's name of :attr:`name` (``module%03d_<name>``, the output folder)."""
        return self.name

    # ---------------------------------------------------------------- outputs
    @property
    def output_dir(self) -> str:
        return os.path.join(os.fspath(self.output_root) if self.output_root is not None else get_output_root(),
                            self.name)

    def writer(self, iteration: int | None = None) -> OutputWriter:
        """Writer for this update's files (default iteration: the number of the current update); in
        ``mode="recog"`` also the original's ``recog/`` folder with suffix-less names."""
        return OutputWriter(self.output_dir, self.n_updates_ if iteration is None else iteration,
                            original_recog=self.mode == "recog")

    # ----------------------------------------------------------- the template
    def update(self, load_trained_model=None) -> None:
        """Run this module once (one outer iteration): read and check the messages, infer (learn
        mode), send the messages, write the files and metrics, count the update (see the class
        docstring for the hooks it calls).

        ``load_trained_model``: the original's way to recognise with a learned model, a folder
        holding a model file (``module002_mlda/004``): :meth:`load_model` first (the module then
        stays in ``mode="recog"``).  In ``mode="recog"`` without learned parameters, the model
        file in this module's own folder (the latest learning update's) is loaded, as the
        original's ``mode="recog"`` did.  An integer is the iteration number of the original's
        pixyz modules (``vae1.update(i)``): it must be this module's own count (:attr:`n_updates_`,
        the folder its files go to)."""
        if isinstance(load_trained_model, numbers.Integral) and not isinstance(load_trained_model, bool):
            if load_trained_model != self.n_updates_:
                raise ValueError(f"{self.name}: update({load_trained_model}) names iteration {load_trained_model}, but "
                                 f"this module has done {self.n_updates_} updates (its next files go to "
                                 f"{self.n_updates_:03d}); call update() without the number")
            load_trained_model = None
        if load_trained_model is not None:
            self.load_model(load_trained_model)
        if self.mode == "recog":
            self._load_own_model()
        for child, msg in zip(self.children, self.get_observations()):
            if not isinstance(msg, self.input_kinds):
                raise ValueError(f"{self.name}: the message from {child.name} must be a "
                                 f"{' or '.join(k.kind for k in self.input_kinds)} message "
                                 f"({', '.join(k.__name__ for k in self.input_kinds)}), got a {msg.kind} message "
                                 f"({type(msg).__name__})")
        inputs = self._read_inputs()
        backward = self._read_backward(inputs)
        category = check_category(getattr(self, "category", None), self.n_points, self.name)
        if self.mode == "learn":
            self._infer(inputs, backward)
        else:
            self._recognise(inputs, backward)
        self.set_forward_msg(self._forward_message(inputs, backward))
        self.send_backward_msgs(self._backward_messages(inputs, backward))
        if self.mode == "learn" and self.n_updates_ == 0 and _dist.is_writer():  # a new run: no stale iteration
            remove_stale_iterations(self.output_dir)
        w = self.writer()
        probs = self._class_probs(inputs, backward)
        if probs is not None and _dist.is_sharded():  # a sharded fit scores every rank's points
            probs = _dist.gather_rows(torch.as_tensor(probs))
            category = _dist.gather_rows(category)
        metrics = {}
        if probs is not None:
            metrics = {k: float(v) for k, v in write_classification(w, probs, category, self.mode,
                                                                   self._original_class_file).items()}
        self._write_outputs(w, inputs, backward)
        if self.mode == "learn":
            self._write_model(w)
        metrics.update(self._metrics(inputs, backward))
        self.metrics_ = metrics
        if metrics:  # the scores and the module's own objective, per iteration (serket-pyro report)
            w.save_json(f"metrics_{self.mode}.json",
                        {**{k: _json_number(v) for k, v in metrics.items()}, "run_id": get_run_id()})
        self.n_updates_ += 1

    def recog(self) -> None:
        """The original VAE's ``recog()``: :meth:`update` in ``mode="recog"`` (the module stays in
        it), with the model loaded by ``load_dir`` or found in the module's own folder."""
        self.mode = "recog"
        self.update()

    # ------------------------------------------------------------------ hooks
    def _read_inputs(self):
        """Hook: the children's messages, validated (default: :meth:`get_observations`)."""
        return self.get_observations()

    def _read_backward(self, inputs):
        """Hook: the parents' message, validated (default: :meth:`get_backward_msg`, or ``None``)."""
        return self.get_backward_msg()

    def _infer(self, inputs, backward) -> None:
        """Hook, learn mode only: update the ``_fitted`` attributes from ``inputs`` and ``backward``."""
        raise NotImplementedError(f"{self.name}: {type(self).__name__} implements no _infer(inputs, backward)")

    def _recognise(self, inputs, backward) -> None:
        """Hook, recog mode only (learned state frozen); default: refuse without learned state."""
        self._require_fitted()

    def _is_fitted(self) -> bool:
        return not self._fitted or getattr(self, self._fitted[0], None) is not None

    def _require_fitted(self) -> None:
        """``ValueError`` naming this module when its first ``_fitted`` attribute is unset."""
        if not self._is_fitted():
            raise ValueError(f"{self.name}: mode='recog' needs learned parameters ({', '.join(self._fitted)}): "
                             "update() in mode='learn' first, or load a model: load_dir='<folder of a learning "
                             f"iteration, e.g. {self.name}/004>', load_model(folder), load_state_dict() or load_graph() "
                             f"(no {MODEL_INFO} in {self.output_dir})")

    # ------------------------------------------------------------- model files
    def _write_model(self, writer: OutputWriter) -> None:
        """Write ``model.pt`` (:meth:`state_dict`, tensors only) and ``model.json`` (class, config,
        size and SHA-256 of ``model.pt``) for :meth:`load_model`; nothing without learned state."""
        state = self.state_dict()
        if not state:
            return
        try:
            config = self.get_config()
        except ValueError:  # a user's module that does not store its parameters: no config check
            config = None
        data, record = tensor_file_bytes(state)
        cls = type(self)
        info = {"format": _MODEL_FORMAT, "version": 1, "class": f"{cls.__module__}.{cls.__qualname__}",
                "classes": [c.__name__ for c in cls.__mro__ if isinstance(c, type) and issubclass(c, Module)],
                "name": self.name, "iteration": int(self.n_updates_), "config": config, "state_file": MODEL_FILE,
                **record}
        writer.write_bytes(MODEL_FILE, data)  # the description last: a folder with it is complete
        writer.save_json(MODEL_INFO, info)

    def load_model(self, folder) -> None:
        """Load the model a learning update wrote into ``folder`` (``model.json`` and ``model.pt``,
        e.g. ``module001_gmm/004`` for iteration 4, or ``module001_gmm`` for the latest) and switch
        to ``mode="recog"``: the original's ``load_dir`` / ``load_trained_model``.

        ``folder`` is a path as given (relative to the current directory, as the original's).  The
        files are checked before use (:mod:`serket_pyro.safe_files`: regular files, recorded size
        and SHA-256, tensors only), the saved class must be this module's class (or a base or
        subclass of it) and the parameters that fix the learned shapes (``K``, ``latent_dim``...)
        must agree; ``ValueError`` naming this module and the file otherwise.
        """
        folder = os.fspath(folder)
        info_path = os.path.join(folder, MODEL_INFO)
        if not os.path.lexists(info_path):
            raise ValueError(f"{self.name}: no model in {folder!r} ({MODEL_INFO} not found): give the folder of one "
                             f"learning iteration (e.g. {self.name}/004) written by update() in mode='learn'")
        info = read_json(info_path, "model description")
        if not isinstance(info, dict) or info.get("format") != _MODEL_FORMAT:
            raise ValueError(f"{self.name}: {info_path} is not a serket_pyro model file")
        saved = str(info.get("class", "")).rpartition(".")[2]
        mine = {c.__name__ for c in type(self).__mro__}
        theirs = info.get("classes") if isinstance(info.get("classes"), list) else [saved]
        if saved not in mine and type(self).__name__ not in theirs:
            raise ValueError(f"{self.name}: {info_path} holds a {saved} model, not a {type(self).__name__} one")
        config = info.get("config")
        if isinstance(config, dict):
            own = self.get_config()
            bad = [f"{k}={config[k]!r} (this module: {own[k]!r})" for k in self._model_params
                   if k in config and k in own and config[k] != own[k]]
            if bad:
                raise ValueError(f"{self.name}: the model in {folder!r} was learned with {', '.join(bad)}")
        path = resolve_inside(folder, info.get("state_file", MODEL_FILE), "model file", info_path)
        state = read_tensor_file(path, info, info_path)
        try:
            self.load_state_dict(state)
        except (KeyError, RuntimeError, IndexError, TypeError) as err:
            raise ValueError(f"{self.name}: the model in {path} does not fit this module: {err}") from None
        self.mode = "recog"
        self.load_dir = folder

    def _load_own_model(self) -> None:
        """``mode="recog"`` without learned parameters: load the model file of this module's
        folder if there is one (else :meth:`_recognise` reports what is missing)."""
        if not self._is_fitted() and os.path.lexists(os.path.join(self.output_dir, MODEL_INFO)):
            self.load_model(self.output_dir)

    def _forward_message(self, inputs, backward):
        """Hook: the message to the parents (a :class:`~serket_pyro.messages.Message` or an array)."""
        raise NotImplementedError(f"{self.name}: {type(self).__name__} implements no _forward_message()")

    def _backward_messages(self, inputs, backward) -> list:
        """Hook: one message per child, ``None`` for none (default: nothing to any child)."""
        return [None] * len(self.children)

    def _class_probs(self, inputs, backward):
        """Hook: ``(N, K)`` class probabilities to write and score (``Pdz``/``class``/``acc``
        files), or ``None`` (default)."""
        return None

    def _write_outputs(self, writer: OutputWriter, inputs, backward) -> None:
        """Hook: write this update's files with ``writer.savetxt(...)`` (default: none)."""

    def _metrics(self, inputs, backward) -> dict:
        """Hook: numbers of this update for ``metrics_`` (``"objective"``: nats, higher is better)."""
        return {}

    # ------------------------------------------------------------- persistence
    @classmethod
    def _init_params(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in list(sig.parameters.values())[1:]
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in cls._unsaved_params]

    def get_config(self) -> dict:
        """The ``__init__`` parameters (but ``category``, ``output_root``, ``name``) as JSON values,
        read from the attributes of the same names: ``type(m)(**m.get_config())`` rebuilds it."""
        out = {}
        for p in self._init_params():
            if not hasattr(self, p):
                raise ValueError(f"{self.name}: get_config() reads the __init__ parameter {p!r} from self.{p}, "
                                 f"which {type(self).__name__} does not set: store every parameter under its name")
            out[p] = _jsonable(getattr(self, p))
        return out

    def state_dict(self) -> dict:
        """The ``_fitted`` attributes as a flat dict of CPU tensors (key: the name without
        underscores; lists as ``key.0, key.1, ...``, dicts as ``key/sub``); empty before learning."""
        if not self._fitted or getattr(self, self._fitted[0], None) is None:
            return {}
        out = {}
        for attr in self._fitted:
            v, key = getattr(self, attr, None), attr.strip("_")
            if isinstance(v, dict):
                out.update({f"{key}/{k}": _state_tensor(x) for k, x in v.items()})
            elif isinstance(v, (list, tuple)):
                out.update({f"{key}.{i}": _state_tensor(x) for i, x in enumerate(v)})
            elif v is not None:
                out[key] = _state_tensor(v)
        return out

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`, checked by :meth:`_check_state` and ``_state_rules``
        before anything is set."""
        if not state:
            return
        values = {}
        for attr in self._fitted:
            key = attr.strip("_")
            if key in state:
                values[attr] = state[key]
            elif any(k.startswith(key + "/") for k in state):
                values[attr] = {k[len(key) + 1:]: v for k, v in state.items() if k.startswith(key + "/")}
            elif f"{key}.0" in state:
                values[attr] = [state[f"{key}.{i}"] for i in range(len(state)) if f"{key}.{i}" in state]
            else:
                values[attr] = None
        values = self._check_state(values)
        for attr, rule in self._state_rules.items():
            v = values.get(attr)
            items = [] if v is None else v.items() if isinstance(v, dict) else (
                [(f".{i}", x) for i, x in enumerate(v)] if isinstance(v, list) else [("", v)])
            for k, x in items:
                if rule == "probabilities":
                    check_loaded_probabilities(torch.as_tensor(x), attr.strip("_") + k, self.name)
        for attr, v in values.items():
            setattr(self, attr, v)

    def _check_state(self, values: dict) -> dict:
        """Hook: check and convert loaded ``{attribute: tensor, list or dict of tensors, or None}``.

        Default: every attribute present, every floating-point value finite, values converted
        to numpy arrays (0-d ones to Python numbers), as the module computed them in the
        original Serket; ``ValueError`` naming this module otherwise.  Override it for shapes,
        probabilities or tensors."""
        missing = [a for a in self._fitted if values.get(a) is None]
        if missing:
            raise ValueError(f"{self.name}: state dict lacks {[a.strip('_') for a in missing]}")

        def conv(x):
            a = torch.as_tensor(x).detach().cpu().numpy()
            return a.item() if a.ndim == 0 else a

        out = {}
        for a, v in values.items():
            items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else [("", v)]
            check_loaded_finite({f"{a}{k}": torch.as_tensor(x) for k, x in items}, self.name)
            out[a] = ({k: conv(x) for k, x in v.items()} if isinstance(v, dict)
                      else [conv(x) for x in v] if isinstance(v, list) else conv(v))
        return out

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


def _jsonable(v):
    """A config value as JSON: arrays and tuples as lists, devices as strings, objects (networks)
    by their class name."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, (np.ndarray, torch.Tensor)):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, torch.device):
        return str(v)
    return type(v).__name__


def _state_tensor(v) -> torch.Tensor:
    if isinstance(v, float):
        return torch.tensor(v, dtype=torch.float64)
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().clone()
    return torch.as_tensor(np.asarray(v)).clone()


class Observation(Module):
    """A leaf holding data: its forward message is the data, ``(N, D)`` rows = data points.

    Args:
        data: array-like with N >= 1 rows; 1-D arrays become ``(N, 1)``, arrays with more than two
            axes (e.g. images ``(N, 28, 28)``) are flattened to ``(N, D)``.  Must be finite.
            ``None``: the original's missing modality (``missing = True``): a parent with
            ``accepts_missing_observation`` (MLDA) reads zero counts, any other parent refuses it.
        name: short name (``obs`` as in the original).
    """

    def __init__(self, data, name: str = "obs"):
        super().__init__(name, learnable=False)
        self._forward_msg = self._message(data)

    def _message(self, data) -> Message | None:
        """``data`` checked and converted (``None``: no data, the original's missing modality)."""
        if data is None:
            return None
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
        return msg

    @property
    def data(self) -> torch.Tensor:
        return self._forward_msg.value if isinstance(self._forward_msg, PointMessage) else self._forward_msg

    @property
    def missing(self) -> bool:
        """No data: ``Observation(None)``, the original's missing modality (all-zero counts for an
        MLDA) until data are set with :meth:`set_forward_msg`, as the original's scripts do."""
        return self._forward_msg is None

    @property
    def n_points(self) -> int | None:
        return None if self._forward_msg is None else self._forward_msg.N

    def set_forward_msg(self, msg) -> None:
        """Set (or replace) the data, as the original's scripts do with ``Observation(None)``;
        ``None``: no data (a missing modality)."""
        self._forward_msg = self._message(msg)

    def connect(self, *children):
        raise ValueError(f"{self.name} is an Observation: it has no children")

    def update(self) -> None:
        """Observations never change."""


def _json_number(v):
    """A metric as JSON: numbers (also 0-d tensors and NumPy scalars) as ``float``, the rest as is."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


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

