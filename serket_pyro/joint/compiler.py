"""The joint compiler: any connected graph of modules with joint hooks as ONE Pyro program.

:func:`joint_program` walks the graph from its top and composes the modules' own distributions
(the joint hooks of :class:`~serket_pyro.module.Module`): each module's latent site is named by
the module (``"<name>.z"``), and a parent's distribution is placed on its child's site.  So for
``Observation -> VAE -> GMM``, the GMM's component ``N(mu_c, Sigma_c)`` is the prior of the VAE's
``z``; for ``GMM -> MLDA`` the GMM's class is a token of the MLDA; for ``GMM -> MarkovModel`` the
GMM's class is the chain's state.

Inference is stochastic variational inference on the ELBO (:class:`pyro.infer.TraceEnum_ELBO`):

* ``"class"`` sites (GMM) are enumerated in parallel (``infer={"enumerate": "parallel"}``);
* a ``"chain"`` (Markov model) over a child is summed by the forward algorithm over contiguous
  chunks of ``chunk_len`` rows (links between chunks dropped in training, as
  :class:`~serket_pyro.joint.model.JointModel`); its child's site is then a placeholder with a
  masked density, the chain's marginal enters as one factor per chunk;
* ``"latent"`` sites have the module's guide (the VAE's encoder: amortised; the MLDA's topic
  proportions: a local Dirichlet per document, the per-token topics summed out analytically);
* global parameters are point estimates (tensors held by :class:`JointProgram`, constrained
  with ``torch.distributions.transform_to``); minibatches subsample the data points (chunks
  with a chain).

The log densities are divided by the number of data points, so the loss is the negative ELBO
per data point.  :meth:`JointProgram.to_modules` writes the parameters back into the modules.

An MLDA under an MLDA (the mMLDA hierarchies: objects and motions under a top MLDA, a chain of
MLDAs): the parent's token for its child is one of the child's topics, drawn per document from
``theta @ phi_i`` and counted as ``weights[i]`` tokens (as the child's class message in message
passing); that topic, the site ``"<child>.state"`` (enumerated in parallel), draws the child's
``theta`` by the child's :meth:`~serket_pyro.module.Module.joint_state_dist`
(``Dirichlet(state_concentration[s])``).  In general a ``"latent"`` module with a
``joint_state_dist`` under a ``"latent"`` parent gets such a state.

Graphs refused, each with an error naming the module (the reasons at length: README, "Any
graph: the joint compiler"):

* several Markov chains, or a chain under a parent: a chain's transition already is its
  child's state distribution, so a parent would put a second one on it; a chain is the top;
* a GMM over a class module: a Gaussian has no density on a class, and a mixture over one
  class per data point is not identifiable (put an MLDA or a Markov chain over a class module);
* a module with several parents (the compiler takes trees).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.distributions import transform_to

from .. import distributed as _dist
from ..module import Module, Observation, connected_modules
from ..ops.forward_backward import forward_backward
from ..ops.sharded_forward_backward import sharded_forward_backward
from ..validation import check_positive_float, check_positive_int

_log = logging.getLogger(__name__)

__all__ = ["JointProgram", "joint_program"]

_ROLES = ("class", "latent", "chain")


def _modules_of(graph) -> list[Module]:
    if hasattr(graph, "modules") and isinstance(getattr(graph, "modules"), dict):
        return connected_modules(*graph.modules.values())
    if isinstance(graph, Module):
        return connected_modules(graph)
    return connected_modules(*list(graph))


def hmm_log_marginal(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit: torch.Tensor) -> torch.Tensor:
    """``log sum_s p(s_0) prod_t p(s_t | s_{t-1}) e_t(s_t)`` by the forward algorithm.

    Args:
        log_init: ``(K,)`` ``log p(s_0)``.
        log_trans: ``(K, K)`` ``log p(s_t = j | s_{t-1} = i)``, rows = from.
        log_emit: ``(..., T, K)`` log emission of every step and state.
    Returns ``(...)``."""
    alpha = log_init + log_emit[..., 0, :]
    for t in range(1, log_emit.shape[-2]):
        alpha = (alpha.unsqueeze(-1) + log_trans).logsumexp(-2) + log_emit[..., t, :]
    return alpha.logsumexp(-1)


class JointProgram(nn.Module):
    """One Pyro model and guide compiled from a connected graph of modules (module docstring).

    Args:
        graph: a :class:`~serket_pyro.system.System`, a module of the graph, or its modules.
        chunk_len: ``T``, rows per contiguous chunk of a Markov chain (default 100).
        dtype: of the global parameters (default float64: an MLDA's class tokens, ``weights[i]``
            times a log-probability, underflow the enumeration's sums in float32); networks keep
            their own precision.
        subgraph: the modules to compile (their observations come with them), e.g. the VAE and
            GMM of a VAE+GMM+MM system without its chain; default every module connected to ``graph``.
        observations: ``{Observation: data}``: data read instead of those observations' own
            (same number of rows for every observation), e.g. 8-bit images kept as bytes.
        constraints: ``{(module, parameter name): constraint}`` replacing a parameter's constraint
            (its unconstrained representation), e.g. ``(gmm, "scale_tril")`` with
            :data:`~serket_pyro.joint.constraints.diagonal_cholesky` for diagonal class
            covariances; the hook's initial value is mapped by the constraint's transform.
        entropy: ``"analytic"`` (default): the ELBO's ``-E_q[log q]`` of a guide that has a
            closed-form entropy (the VAE's Normal, the MLDA's Dirichlet) is that entropy, whose
            gradient has no sampling noise (Kingma & Welling 2014, eq. 10); ``"sampled"``: the
            one-draw ``-log q(z)`` of :class:`~pyro.infer.Trace_ELBO` (same expectation).

    Attributes:
        modules_: the graph's modules (top first); ``N``: data points (rows) the program holds.
        shard_holding: built inside :func:`serket_pyro.distributed.sharded` ``(N_global)`` on this
            process's rows ``row_offset .. row_offset + N - 1`` of every observation
            (:func:`~serket_pyro.distributed.shard_bounds`): it holds only them and their local
            guide parameters; :meth:`fit` is then data-parallel over the processes
            (:mod:`serket_pyro.joint.data_parallel`) and the posteriors are of its rows.
        N_global, row_offset: the data's rows and this program's first (``N``, 0 otherwise).
        loss_history_: mean negative ELBO per point of every epoch of :meth:`fit`.

    The program's parameters are ``torch.nn.Parameter`` s in unconstrained space
    (:meth:`params` gives the constrained values per module); the VAEs' networks are the VAEs'
    own (``encoder_``, ``decoder_``).
    """

    def __init__(self, graph, *, chunk_len: int = 100, dtype=None, subgraph=None, observations=None,
                 constraints=None, entropy: str = "analytic"):
        super().__init__()
        if entropy not in ("analytic", "sampled"):
            raise ValueError(f"joint_program: entropy must be 'analytic' or 'sampled', got {entropy!r}")
        self.entropy = entropy
        mods = _modules_of(graph)
        if subgraph is not None:  # the listed modules and their observations
            keep = [m for m in subgraph if not isinstance(m, Observation)]
            mods = [m for m in mods if any(m is k for k in keep)
                    or (isinstance(m, Observation) and any(k in m.parents for k in keep))]
        self._data_override = list((observations or {}).items())
        self._constraint_override = {(m.name, k): c for (m, k), c in (constraints or {}).items()}
        for m in mods:
            if isinstance(m, Observation):
                continue
            if getattr(m, "joint_role", None) not in _ROLES:
                raise ValueError(f"{m.name}: {type(m).__name__} has no joint hooks (joint_role is "
                                 f"{getattr(m, 'joint_role', None)!r}; set it to one of {_ROLES} and implement "
                                 "the hooks named in 'Joint hooks' of the Module docstring), so joint_program "
                                 "cannot compile it")
        nodes = [m for m in mods if not isinstance(m, Observation)]
        if not nodes:
            raise ValueError("joint_program: the graph has no module above its observations")
        for m in nodes:
            parents = [p for p in m.parents if p in mods]
            if len(parents) > 1:
                raise ValueError(f"{m.name}: joint_program compiles trees; this module has "
                                 f"{len(parents)} parents ({', '.join(p.name for p in parents)})")
            if not m.children:
                raise ValueError(f"{m.name}: no children: nothing to model")
        chains = [m for m in nodes if m.joint_role == "chain"]
        if len(chains) > 1:
            raise ValueError(f"joint_program: at most one Markov chain, got {[m.name for m in chains]} (a chain "
                             "is the top of its graph, see the compiler's docstring)")
        for m in chains:
            if m.parents:
                raise ValueError(f"{m.name}: a Markov chain must be at the top of the graph (its transitions are "
                                 "its state's distribution; a parent would place a second one on it)")
            if len(m.children) != 1 or isinstance(m.children[0], Observation):
                raise ValueError(f"{m.name}: a Markov chain needs exactly one child module")
            x = m.children[0]
            if x.joint_role == "class":
                bad = [c.name for c in x.children if getattr(c, "joint_role", None) == "class"]
                if bad:
                    raise ValueError(f"{x.name}: under the Markov chain {m.name} its children must be observations "
                                     f"or continuous latents, got the class modules {bad}")
        self.chain = chains[0] if chains else None
        self._state_children = _state_children(nodes)
        self.chunk_len = check_positive_int(chunk_len, "chunk_len", "joint_program")
        roots = [m for m in nodes if not [p for p in m.parents if p in mods]]
        if len(roots) != 1:
            raise ValueError(f"joint_program: the graph must have one top module, got {[m.name for m in roots]}")
        self.root = roots[0]
        order, stack = [], [self.root]  # top-down
        while stack:
            m = stack.pop(0)
            order.append(m)
            stack.extend(c for c in m.children if not isinstance(c, Observation) and c not in order)
        self.modules_ = order
        self.dtype = torch.float64 if dtype is None else dtype
        # ---- data: every observation as its parent reads it
        self._obs: dict[tuple[str, int], torch.Tensor] = {}
        sizes = set()
        for m in order:
            for i, c in enumerate(m.children):
                if isinstance(c, Observation):
                    data = next((d for o, d in self._data_override if o is c), None)
                    if data is None and c.missing:
                        raise ValueError(f"{m.name}: the observation {c.name} has no data")
                    v = m.joint_observed(i, c.data if data is None else data)  # in the module's precision
                    self._obs[(m.name, i)] = v
                    sizes.add(v.shape[0])
        if len(sizes) != 1:
            raise ValueError(f"joint_program: the observations have different numbers of data points {sorted(sizes)}")
        self.N = sizes.pop()
        # ---- shards: built inside distributed.sharded(N), the observations are this rank's rows
        self.shard_holding = _dist.is_sharded()
        self.N_global, self.row_offset = self.N, 0
        if self.shard_holding:
            rows = _dist.local_rows()
            if self.N != rows.stop - rows.start:
                raise ValueError(f"joint_program: built inside distributed.sharded({_dist.global_rows(0)}), the "
                                 f"observations must hold this rank's rows {rows.start}..{rows.stop - 1} "
                                 f"(distributed.shard_bounds), got {self.N} rows; build a program on the whole "
                                 "data outside the context and fit it with fit_data_parallel")
            self.N_global, self.row_offset = _dist.global_rows(self.N), rows.start
        if self.chain is not None and self.N < 2:
            raise ValueError("joint_program: a Markov chain needs at least 2 data points"
                             + (" on every process" if self.shard_holding else ""))
        # ---- parameters, children first (a class child's size is its K, a latent's its dimension)
        self._params = nn.ModuleDict()
        self._locals = nn.ModuleDict()
        self._constraints: dict[str, dict] = {}
        self._nets = nn.ModuleList()
        for m in reversed(order):
            csizes, cvalues = [], []
            for i, c in enumerate(m.children):
                if isinstance(c, Observation):
                    v = self._obs[(m.name, i)]
                    csizes.append(v.shape[1])
                    cvalues.append(v)
                else:
                    csizes.append(c.joint_size())
                    cvalues.append(self._initial_latent(c))
            parent = next((p for p in m.parents if p in order), None)
            # the number of states of a chain parent (whose state is this module's class, or
            # conditions its latent), a class parent's classes, 0 under a latent parent (which
            # places the distribution), None at the top (the module's own prior parameters)
            if parent is None:
                parent_states = None
            elif m in self._state_children:  # the parent draws one of this module's K states
                parent_states = m.joint_size()
            elif parent.joint_role == "chain":
                parent_states = m.joint_size()
            elif parent.joint_role == "class":
                parent_states = parent.joint_size()
            else:
                parent_states = 0
            nets = m.joint_networks(csizes)
            for net in nets:
                self._nets.append(net)
            self._register(m, m.joint_params(csizes, cvalues, parent_states), self._params)
            with _dist.local_rng() if self.shard_holding else contextlib.nullcontext():  # shape: the shard's
                self._register(m, m.joint_local_params(self.N), self._locals)
        self.loss_history_: list[float] = []

    # ------------------------------------------------------------------ plumbing
    def _initial_latent(self, m):
        """Initial values of a child's site for its parent's initialisation: the guide's means of
        a ``"latent"`` child (a trained VAE's encoder means, an MLDA's fitted ``theta_``), else None."""
        return self._latent_mean(m).double() if m.joint_role == "latent" else None

    def _register(self, m, spec: dict, where: nn.ModuleDict) -> None:
        pd = nn.ParameterDict()
        cons = self._constraints.setdefault(m.name, {})
        for k, (init, constraint) in spec.items():
            constraint = self._constraint_override.get((m.name, k), constraint)
            init = torch.as_tensor(init, dtype=torch.float64)
            u = transform_to(constraint).inv(init)
            pd[k] = nn.Parameter(u.to(self.dtype).detach().clone())
            cons[k] = constraint
        where[m.name] = pd

    def _constrained(self, where: nn.ModuleDict, name: str, rows=None) -> dict:
        out = {}
        for k, u in where[name].items():
            v = transform_to(self._constraints[name][k])(u if rows is None else u[rows])
            out[k] = v
        return out

    def params(self, module=None) -> dict:
        """Constrained global parameters, ``{module name: {name: tensor}}`` (or one module's)."""
        if module is not None:
            return self._constrained(self._params, module.name)
        return {m.name: self._constrained(self._params, m.name) for m in self.modules_}

    @torch.no_grad()
    def set_param(self, module, name: str, value) -> None:
        """Set a global parameter of ``module`` (constrained value), e.g. to start from known
        values or to evaluate the program at fixed parameters."""
        if module.name not in self._params or name not in self._params[module.name]:
            raise ValueError(f"joint_program: {module.name} has no joint parameter {name!r}")
        u = transform_to(self._constraints[module.name][name]).inv(torch.as_tensor(value, dtype=torch.float64))
        self._params[module.name][name].copy_(u.to(self.dtype))

    @torch.no_grad()
    def set_local(self, module, name: str, value) -> None:
        """Set a local (per data point) guide parameter of ``module``, ``(N, ...)``."""
        if module.name not in self._locals or name not in self._locals[module.name]:
            raise ValueError(f"joint_program: {module.name} has no local parameter {name!r}")
        u = transform_to(self._constraints[module.name][name]).inv(torch.as_tensor(value, dtype=torch.float64))
        self._locals[module.name][name].copy_(u.to(self.dtype))

    def _chunk_starts(self) -> torch.Tensor:
        T = min(self.chunk_len, self.N)
        starts = torch.arange(0, self.N - T + 1, T)
        if int(starts[-1]) + T < self.N:
            starts = torch.cat([starts, torch.tensor([self.N - T])])
        return starts

    @property
    def max_plate_nesting(self) -> int:
        return 2 if self.chain is not None else 1

    def _plates(self, idx, batch_size):
        """``(outer plate, inner plate or None, rows function)``."""
        if self.chain is None:
            return pyro.plate("data", self.N, subsample=idx, subsample_size=batch_size, dim=-1), None
        starts = self._chunk_starts()
        T = min(self.chunk_len, self.N)
        return (pyro.plate("chunks", len(starts), subsample=idx, subsample_size=batch_size, dim=-2),
                pyro.plate("time", T, dim=-1))

    def _rows(self, ind):
        if self.chain is None:
            return ind
        T = min(self.chunk_len, self.N)
        return self._chunk_starts()[ind.cpu()].unsqueeze(-1) + torch.arange(T)

    def _rows_of(self, m, i, rows):
        """Rows of ``m``'s observed child ``i``, floats in the program's precision."""
        v = self._obs[(m.name, i)]
        v = v[rows.to(v.device)]
        return v.to(self.dtype) if v.is_floating_point() else v

    def _observed(self, m, rows):
        return [None if not isinstance(c, Observation) else self._rows_of(m, i, rows)
                for i, c in enumerate(m.children)]

    # ------------------------------------------------------------------ Pyro program
    def model(self, idx: torch.Tensor | None = None, batch_size: int | None = None):
        """The joint generative model of the points ``idx`` (chunks with a Markov chain; all when
        ``None``), log densities divided by ``N``.  Enumerate with
        ``TraceEnum_ELBO(max_plate_nesting=self.max_plate_nesting)``."""
        P = self.params()
        outer, inner = self._plates(idx, batch_size)
        with outer as ind, poutine.scale(scale=1.0 / self.N):
            rows = self._rows(ind)
            if self.chain is None:
                self._visit(self.root, P, rows, self.root.joint_prior(P[self.root.name]))
                return
            mm, x = self.chain, self.chain.children[0]
            K = x.joint_size()
            states = torch.arange(K)
            with inner:
                if x.joint_role == "class":  # the chain's state IS the class: its children's sites
                    log_emit = 0.0
                    for i, c in enumerate(x.children):
                        d = x.joint_child_dist(P[x.name], states, i)
                        if isinstance(c, Observation):
                            v = self._rows_of(x, i, rows)
                        else:
                            v = pyro.sample(c.joint_site(), self._placeholder(c, P))
                        log_emit = log_emit + d.log_prob(v.unsqueeze(-1 - len(d.event_shape)))
                        if not isinstance(c, Observation):
                            self._children(c, P, rows, v)
                else:  # a continuous site: its distribution given each state
                    v = pyro.sample(x.joint_site(), self._placeholder(x, P))
                    d = x.joint_state_dist(P[x.name], states)
                    log_emit = d.log_prob(v.unsqueeze(-1 - len(d.event_shape)))
                    self._children(x, P, rows, v)
            A = P[mm.name]["trans_prob"]
            log_z = hmm_log_marginal(mm.joint_init_log_prob(P[mm.name]), A.log(), log_emit)
            pyro.factor(f"{mm.name}.chain", log_z.unsqueeze(-1) if log_z.dim() else log_z)

    def _placeholder(self, m, P):
        """A site whose density the chain's factor carries (log density 0, on the support and
        with the shape of the module's prior); its value comes from the guide."""
        d = m.joint_prior(P[m.name] if P[m.name] else {"_": torch.zeros((), dtype=self.dtype)})
        return _Placeholder(d.support, d.batch_shape, d.event_shape)

    def _visit(self, m, P, rows, d):
        site = m.joint_site()
        if m.joint_role == "class":
            v = pyro.sample(site, d, infer={"enumerate": "parallel"})
        else:
            v = pyro.sample(site, d)
        self._children(m, P, rows, v)

    def _children(self, m, P, rows, v):
        for i, c in enumerate(m.children):
            d = m.joint_child_dist(P[m.name], v, i)
            if isinstance(c, Observation):
                pyro.sample(f"{m.name}.obs{i}", d, obs=self._rows_of(m, i, rows))
            elif c in self._state_children:
                self._visit(c, P, rows, self._state_dist(m, c, P, d))
            else:
                self._visit(c, P, rows, d)

    def _state_dist(self, m, c, P, d):
        """The distribution of ``c``'s site under a continuous parent ``m`` that draws one of
        ``c``'s states (an MLDA under an MLDA): the state ``"<c>.state"`` (enumerated in parallel)
        from the parent's discrete ``d``, the site from ``c.joint_state_dist``."""
        if not d.has_enumerate_support:
            raise ValueError(f"{m.name}: joint_child_dist for {c.name} must be a discrete distribution over "
                             f"its {c.joint_size()} states (the state the parent draws), got {type(d).__name__}")
        s = pyro.sample(f"{c.name}.state", d, infer={"enumerate": "parallel"})
        return c.joint_state_dist(P[c.name], s)

    def guide(self, idx: torch.Tensor | None = None, batch_size: int | None = None):
        """Guides of the ``"latent"`` sites (the same arguments as :meth:`model`); class sites are
        enumerated, chains summed."""
        P = self.params()
        outer, inner = self._plates(idx, batch_size)
        with outer as ind, poutine.scale(scale=1.0 / self.N):
            rows = self._rows(ind)
            with (inner if inner is not None else contextlib.nullcontext()):
                for m in self.modules_:
                    if m.joint_role != "latent":
                        continue
                    local = self._constrained(self._locals, m.name, rows)
                    self._guide_site(m.joint_site(), m.joint_guide(P[m.name], local, self._observed(m, rows)))

    def _guide_site(self, site: str, q) -> None:
        """Sample ``site`` from ``q``; with ``entropy="analytic"`` and a ``q`` that has one, the
        draw's ``log q`` is masked and ``-entropy`` enters the guide as a factor (``ELBO = E[log p]
        - E[log q]``, so the ELBO gains ``+entropy``)."""
        try:
            h = q.entropy() if self.entropy == "analytic" else None
        except NotImplementedError:
            h = None
        if h is None:
            pyro.sample(site, q)
            return
        with poutine.mask(mask=False):
            pyro.sample(site, q)
        pyro.factor(f"{site}.entropy", -h, has_rsample=True)

    # ------------------------------------------------------------------ fitting
    def has_enumerated_sites(self) -> bool:
        """Whether the model has class sites to enumerate (a chain sums its child's class itself)."""
        chain_child = self.chain.children[0] if self.chain is not None else None
        return bool(self._state_children) or any(m.joint_role == "class" and m is not chain_child
                                                 for m in self.modules_)

    def loss_fn(self):
        """:class:`~pyro.infer.TraceEnum_ELBO` (``Trace_ELBO`` when nothing is enumerated)."""
        if self.has_enumerated_sites():
            return pyro.infer.TraceEnum_ELBO(max_plate_nesting=self.max_plate_nesting)
        return pyro.infer.Trace_ELBO(max_plate_nesting=self.max_plate_nesting)

    def _claim_param_store(self) -> None:
        """Pyro networks (``PyroModule``) register their parameters in Pyro's global store by name;
        an entry left there by another module of the same name would shadow ours: remove it."""
        store = pyro.get_param_store()
        own = {id(p) for p in self._nets.parameters()}
        if not own:
            return
        with torch.no_grad(), torch.random.fork_rng(), poutine.trace(param_only=True) as tr:
            gt = poutine.trace(self.guide).get_trace(*self._first_batch())
            poutine.replay(self.model, trace=gt)(*self._first_batch())
        for name, site in tr.trace.nodes.items():
            if id(site["value"].unconstrained()) not in own and name in store:
                del store[name]

    def _first_batch(self):
        n = len(self._chunk_starts()) if self.chain is not None else self.N
        return (torch.arange(min(2, n)), None)

    def _n_units(self) -> int:
        """Minibatch units this program holds: data points, or chunks with a chain."""
        return len(self._chunk_starts()) if self.chain is not None else self.N

    def _batches(self, batch_size, n_units: int | None = None):
        """Shuffled minibatches of ``n_units`` units (default this program's) from torch's global
        stream (alike on every rank of a sharded fit)."""
        n = self._n_units() if n_units is None else n_units
        per = batch_size if self.chain is None else max(1, batch_size // min(self.chunk_len, self.N_global))
        return torch.randperm(n).split(per)

    def _shard_context(self):
        """A shard-holding program's collectives need :func:`distributed.sharded`: entered here
        (rank streams from seed 0) when the caller has not; otherwise nothing."""
        if self.shard_holding and not _dist.is_sharded():
            return _dist.sharded(self.N_global, seed=0)
        return contextlib.nullcontext()

    def _ownership(self, n: int | None = None) -> tuple[int, int, int, int]:
        """``(global units, first, stop, shift)`` of a sharded fit: the global minibatch stream
        runs over ``global units``; this rank computes the members in ``[first, stop)``, at local
        index ``member - shift``.  A shard-holding program owns its own units (a chain's chunks
        are cut at the shard's edges), in rank order; a whole program (every rank holds all) the
        rank's block of them (:func:`distributed.shard_bounds`).  ``n``: this program's units
        (default :meth:`_n_units`; its rows ``N`` for a loop over data points)."""
        n = self._n_units() if n is None else n
        if not self.shard_holding:
            a, b = _dist.shard_bounds(n, _dist.world_size(), _dist.rank())
            return n, a, b, 0
        counts = _dist.all_gather_same(torch.tensor([n], dtype=torch.int64))[:, 0]
        first = int(counts[:_dist.rank()].sum())
        return int(counts.sum()), first, first + n, first

    def _check_ranks_agree(self, reduced) -> None:
        """Start of a sharded fit: the global parameters and networks (``reduced``) become rank
        0's (one broadcast), and the global random streams must be alike on every rank (else the
        ranks would draw different minibatches): an error naming the module if not."""
        _dist.broadcast_(reduced)
        h = hashlib.sha256(torch.get_rng_state().numpy().tobytes()).digest()[:7]
        states = _dist.all_gather_same(torch.tensor([int.from_bytes(h, "little")], dtype=torch.int64))
        if len(set(states[:, 0].tolist())) > 1:
            raise RuntimeError("joint_program: torch's global random stream differs between the processes of a "
                               "sharded fit (a draw whose shape depends on the shard was taken outside "
                               "distributed.local_rng, or the processes were seeded differently): set the same seed "
                               "on every process before building the program")

    def fit(self, epochs: int = 100, *, batch_size: int | None = None, lr: float = 1e-2,
            lr_networks: float = 1e-3, lr_local: float | None = None, progress: bool = False,
            callback=None) -> list[float]:
        """Maximise the ELBO with Adam for ``epochs`` passes over the data.

        Args:
            batch_size: points per minibatch (chunks of ``chunk_len`` rows with a chain; default all).
            lr: learning rate of the global parameters; ``lr_networks`` of the networks;
                ``lr_local`` of the local guide parameters (default ``10 * lr``).
            callback: called as ``callback(epoch, loss)`` after every epoch (1-based; e.g. to
                record an accuracy), with one optimiser kept over all epochs.

        Inside :func:`serket_pyro.distributed.sharded` (or for a shard-holding program, see
        :mod:`serket_pyro.joint.data_parallel`) the fit is data-parallel: ``batch_size`` is the
        global minibatch, every process takes its members of each.
        Returns the epoch losses (mean negative ELBO per point; of every process's points)."""
        epochs = check_positive_int(epochs, "epochs", "joint_program", minimum=0)
        bs = check_positive_int(self.N if batch_size is None else batch_size, "batch_size", "joint_program")
        lr = check_positive_float(lr, "lr", "joint_program")
        lr_networks = check_positive_float(lr_networks, "lr_networks", "joint_program")
        lr_local = check_positive_float(10 * lr if lr_local is None else lr_local, "lr_local", "joint_program")
        self._claim_param_store()
        groups = [{"params": list(self._params.parameters()), "lr": lr},
                  {"params": list(self._locals.parameters()), "lr": lr_local},
                  {"params": list(self._nets.parameters()), "lr": lr_networks}]
        groups = [g for g in groups if g["params"]]
        opt = torch.optim.Adam(groups)
        elbo = self.loss_fn()
        with self._shard_context():
            # a sharded fit (serket_pyro.joint.data_parallel): every rank draws the same global
            # minibatches, takes its members of each and the gradients are summed over the ranks
            sharded = _dist.is_sharded()
            params = [p for g in groups for p in g["params"]]
            local = {id(p) for p in self._locals.parameters()} if self.shard_holding else set()
            reduced = [p for p in params if id(p) not in local]  # a shard's local params are its own
            n_units, own = self._n_units(), None
            if sharded:
                n_units, *own = self._ownership()
                self._check_ranks_agree(reduced)
            losses = []
            for ep in range(epochs):
                total = 0.0
                batches = self._batches(bs, n_units)
                for b in batches:
                    total += self._step(opt, elbo, b, own if sharded else None, params, reduced)
                n = sum(len(b) for b in batches)
                losses.append(total / n)
                _log.log(logging.INFO if progress else logging.DEBUG, "joint epoch %d: loss %.3f", ep + 1,
                         losses[-1])
                if callback is not None:
                    callback(ep + 1, losses[-1])
        self.loss_history_.extend(losses)
        return losses

    def fit_parameters(self, params, steps: int, *, batch_size: int | None = None, lr: float = 0.05) -> list[float]:
        """Maximise the ELBO with Adam over ``params`` alone, every other parameter and network
        of the program held fixed, for ``steps`` minibatches drawn as in :meth:`fit`
        (data-parallel when sharded), e.g. one layer's bias.  The learning rate falls linearly
        from ``lr`` to 0 over the steps, so that the last steps settle rather than jitter by
        about ``lr`` around the optimum.

        Args:
            params: tensors of the program (``requires_grad``) to fit.
            steps: minibatches (Adam steps); the data are passed over as often as needed.
            batch_size: points per minibatch (chunks with a chain; default all); ``lr``: Adam's.
        Returns the loss of every minibatch (mean negative ELBO per point)."""
        steps = check_positive_int(steps, "steps", "joint_program")
        bs = check_positive_int(self.N if batch_size is None else batch_size, "batch_size", "joint_program")
        lr = check_positive_float(lr, "lr", "joint_program")
        params = list(params)
        if not params or not all(isinstance(p, torch.Tensor) and p.requires_grad for p in params):
            raise ValueError("joint_program: fit_parameters needs tensors that require gradients")
        self._claim_param_store()
        ids = {id(p) for p in params}
        held = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        opt, elbo, losses = torch.optim.Adam(params, lr=lr), self.loss_fn(), []
        decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - t / steps)
        try:
            for p in held:
                p.requires_grad_(False)
            with self._shard_context():
                sharded = _dist.is_sharded()
                n_units, own = self._n_units(), None
                if sharded:
                    n_units, *own = self._ownership()
                    self._check_ranks_agree(params)
                while len(losses) < steps:
                    for b in self._batches(bs, n_units)[:steps - len(losses)]:
                        losses.append(self._step(opt, elbo, b, own if sharded else None, params, params) / len(b))
                        decay.step()
        finally:
            for p in held:
                p.requires_grad_(True)
        return losses

    def _step(self, opt, elbo, b: torch.Tensor, own, params: list, reduced: list) -> float:
        """One Adam step on the minibatch ``b``: its ELBO's gradients (data-parallel over the
        ranks when ``own`` is given, :meth:`_data_parallel_step`), then ``opt.step()``.  Returns
        the minibatch's summed loss."""
        opt.zero_grad(set_to_none=True)
        if own is not None:
            value = self._data_parallel_step(elbo, b, own, params, reduced)
        else:
            loss = elbo.differentiable_loss(self.model, self.guide, b, None)
            loss.backward()
            value = float(loss.detach()) * len(b)
        opt.step()
        return value

    def _data_parallel_step(self, elbo, b: torch.Tensor, own, params: list, reduced: list) -> float:
        """Gradients of one global minibatch ``b`` (``(B,)`` global unit indices) in a sharded
        fit: the ELBO of this rank's members of ``b`` (``own = (first, stop, shift)``, see
        :meth:`_ownership`) weighted by their share ``len(part) / len(b)`` (noise from the rank's
        own stream); the gradients of ``reduced`` (global parameters and networks) summed over the
        ranks in one all-reduce, the others (a shard's local parameters) kept.  Returns the
        minibatch's summed loss (the same on every rank)."""
        first, stop, shift = own
        part = b[(b >= first) & (b < stop)] - shift
        value = 0.0
        if len(part):
            with _dist.local_rng():
                loss = elbo.differentiable_loss(self.model, self.guide, part, None)
            (loss * (len(part) / len(b))).backward()
            value = float(loss.detach()) * len(part)
        for p in params:  # Adam steps every parameter, as one process does (zero outside the batch)
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return _dist.sum_gradients(reduced, value)

    def loss(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Negative ELBO per data point of the points (chunks with a chain) ``idx`` (default all),
        differentiable: one draw of the guide (torch's global RNG), the objective :meth:`fit` descends."""
        return self.loss_fn().differentiable_loss(self.model, self.guide, idx, None)

    def observed(self, module, i: int = 0, rows=None) -> torch.Tensor:
        """Rows ``rows`` (default all) of ``module``'s observed child ``i`` as the program reads
        them (the module's :meth:`~serket_pyro.module.Module.joint_observed`, floats in the
        program's precision)."""
        if (module.name, i) not in self._obs:
            raise ValueError(f"joint_program: child {i} of {module.name} is not an observation of the program")
        return self._rows_of(module, i, torch.arange(self.N) if rows is None else torch.as_tensor(rows))

    @contextlib.contextmanager
    def on_data(self, observations: dict):
        """Within the block, the program reads ``{Observation: new data}`` (``M`` rows for every
        observation) instead of its training data: :meth:`latent_means`,
        :meth:`class_log_posterior` and :meth:`predict` then describe the new data with the
        fitted parameters (graphs without local guide parameters)."""
        if any(len(self._locals[m.name]) for m in self.modules_ if m.name in self._locals):
            raise ValueError("joint_program: new data need a graph without local guide parameters")
        saved, saved_n = dict(self._obs), self.N
        sizes = set()
        try:
            for m in self.modules_:
                for i, c in enumerate(m.children):
                    data = next((d for o, d in observations.items() if o is c), None)
                    if data is not None:
                        v = m.joint_observed(i, data)
                        old = saved[(m.name, i)]
                        if tuple(v.shape[1:]) != tuple(old.shape[1:]):
                            raise ValueError(f"{m.name}: new data of {c.name} have shape {tuple(v.shape[1:])} per "
                                             f"point, the program was fitted on {tuple(old.shape[1:])}")
                        self._obs[(m.name, i)] = v
                        sizes.add(v.shape[0])
            if len(sizes) != 1 or len(observations) != len([k for k in saved]):
                raise ValueError("joint_program: give new data, of one number of rows, for every observation")
            self.N = sizes.pop()
            yield self
        finally:
            self._obs, self.N = saved, saved_n

    # ------------------------------------------------------------------ posteriors
    @torch.no_grad()
    def _latent_mean(self, m) -> torch.Tensor:
        """Guide mean of a ``"latent"`` module's site, ``(N, size)``."""
        P = self._constrained(self._params, m.name)
        parts = []
        for rows in torch.arange(self.N).split(2000):
            local = self._constrained(self._locals, m.name, rows)
            parts.append(m.joint_guide(P, local, self._observed(m, rows)).mean)
        return torch.cat(parts)

    @torch.no_grad()
    def latent_means(self) -> dict[str, torch.Tensor]:
        """Guide means of every ``"latent"`` site, ``{module name: (N, size)}``."""
        return {m.name: self._latent_mean(m) for m in self.modules_ if m.joint_role == "latent"}

    def _site_value(self, m, i, means):
        c = m.children[i]
        return self._rows_of(m, i, torch.arange(self.N)) if isinstance(c, Observation) else means[c.name]

    @torch.no_grad()
    def class_log_posterior(self) -> dict[str, torch.Tensor]:
        """``log p(class | data)`` ``(N, K)`` float64 of every ``"class"`` module, of the chain
        (its states) and of every ``"<child>.state"`` site (the state a continuous parent draws
        for its child, e.g. which topic of a lower MLDA its parent MLDA drew; keyed by the site's
        name), with the continuous latents at their guide means; a chain by forward-backward
        over the whole sequence."""
        P = self.params()
        means = self.latent_means()
        out = {}
        for m in self.modules_:
            if m.joint_role == "chain":
                continue
            if m.joint_role != "class" and not (self.chain is not None and m is self.chain.children[0]):
                continue
            K = m.joint_size()
            states = torch.arange(K)
            if m.joint_role == "class":
                lp = 0.0
                for i, c in enumerate(m.children):
                    d = m.joint_child_dist(P[m.name], states, i)
                    v = self._site_value(m, i, means)
                    lp = lp + d.log_prob(v.unsqueeze(-1 - len(d.event_shape)))
            else:
                d = m.joint_state_dist(P[m.name], states)
                lp = d.log_prob(means[m.name].unsqueeze(-1 - len(d.event_shape)))
            lp = lp.double()
            parent = next((p for p in m.parents if p in self.modules_), None)
            if parent is None:
                lp = lp + m.joint_prior(P[m.name]).log_prob(states).double()
            elif parent.joint_role == "chain":
                A = P[parent.name]["trans_prob"].double()
                fb = sharded_forward_backward if self.shard_holding else forward_backward  # over every shard
                with self._shard_context():
                    res = fb(parent.joint_init_log_prob(P[parent.name]).double().cpu(), A.log().cpu(), lp.cpu())
                lp = torch.from_numpy(res.log_marginals)
                out[parent.name] = lp - lp.logsumexp(-1, keepdim=True)
            else:
                d = parent.joint_child_dist(P[parent.name], means[parent.name], list(parent.children).index(m))
                lp = lp + d.log_prob(states.unsqueeze(-1)).T.double()
            if m.joint_role == "class":
                out[m.name] = lp - lp.logsumexp(-1, keepdim=True)
        for c in self.modules_:
            if c not in self._state_children:
                continue
            parent = next(p for p in c.parents if p in self.modules_)
            states = torch.arange(c.joint_size())
            # p(s | parent's site) p(child's site | s), both sites at their guide means
            d = parent.joint_child_dist(P[parent.name], means[parent.name], list(parent.children).index(c))
            lp = (d.log_prob(states.unsqueeze(-1)).T.double()
                  + c.joint_state_dist(P[c.name], states).log_prob(means[c.name].unsqueeze(-2)).double())
            out[f"{c.name}.state"] = lp - lp.logsumexp(-1, keepdim=True)
        return out

    @torch.no_grad()
    def to_modules(self) -> None:
        """Write the fitted parameters into the modules (``joint_to_module``): a GMM gets its
        Gaussians and most probable classes, a Markov model its transitions, an MLDA ``theta_``
        (the guide means) and ``phi_``; the VAE's networks are the ones trained."""
        self._reread_observations()
        P = self.params()
        post = self.class_log_posterior()
        means = self.latent_means()
        for m in self.modules_:
            m.joint_to_module(P[m.name], post.get(m.name, means.get(m.name)))

    def _reread_observations(self) -> None:
        """Let each module read this program's data again (``joint_observed`` on the row with the
        largest value), so settings a module keeps from reading them (the VAE's data scale) are
        this program's, not those of another program or of :meth:`on_data`."""
        for m in self.modules_:
            for i, c in enumerate(m.children):
                if isinstance(c, Observation):
                    data = next((d for o, d in self._data_override if o is c), None)
                    t = torch.as_tensor(np.asarray(c.data) if data is None and not isinstance(c.data, torch.Tensor)
                                        else (c.data if data is None else data))
                    flat = t.reshape(t.shape[0], -1)
                    row = int(flat.max(1).values.argmax()) if flat.is_floating_point() or flat.dtype == torch.uint8 \
                        else 0
                    m.joint_observed(i, t[row:row + 1])

    @torch.no_grad()
    def predict(self, module) -> np.ndarray:
        """Most probable class of every data point for a ``"class"`` module, a chain or an MLDA
        (its largest topic proportion), ``(N,)`` int."""
        post = self.class_log_posterior()
        if module.name in post:
            return post[module.name].argmax(-1).cpu().numpy()
        return self.latent_means()[module.name].argmax(-1).cpu().numpy()


def _state_children(nodes) -> set:
    """The ``"latent"`` modules under a ``"latent"`` parent that have a state distribution
    (:meth:`~serket_pyro.module.Module.joint_state_dist`, e.g. an MLDA under an MLDA): the parent
    draws one of the child's ``joint_size()`` states, which draws the child's site."""
    out = set()
    for m in nodes:
        for c in m.children:
            if (m.joint_role == "latent" and getattr(c, "joint_role", None) == "latent"
                    and type(c).joint_state_dist is not Module.joint_state_dist):
                out.add(c)
    return out


class _Placeholder(dist.ImproperUniform):
    """:class:`~pyro.distributions.ImproperUniform` whose zero log density has the value's dtype."""

    def log_prob(self, value):
        shape = value.shape[:value.dim() - len(self.event_shape)]
        return value.new_zeros(shape)


def joint_program(graph, **kwargs) -> JointProgram:
    """Compile any connected graph of modules with joint hooks into one :class:`JointProgram`.

    Args:
        graph: a :class:`~serket_pyro.system.System`, any module of the graph, or its modules.
        **kwargs: :class:`JointProgram` options (``chunk_len``, ``dtype``).
    """
    return JointProgram(graph, **kwargs)
