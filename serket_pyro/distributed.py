"""Data-parallel runs on ``torch.distributed``: one process per worker, launched by ``torchrun``.

Each rank holds a contiguous block of every observation (a Markov chain's shard is a stretch of
the chain).  The samplers are data-parallel by design: given the global parameters, a GMM's or
MLDA's blocked Gibbs step draws every point's or token's class independently, so each rank draws
its shard's classes and only the sufficient statistics (class counts, sums, scatter matrices;
topic-word counts) are summed over the ranks (``all_reduce``) before the global parameters are
drawn.  The VAE averages its gradients over the ranks at every minibatch.

Random streams: the global generator (python, numpy, torch, Pyro) is seeded alike on every rank
and draws only what every rank draws alike (parameters from all-reduced statistics, network
initialisation), so the ranks hold the same parameters bit for bit; every draw whose shape
depends on the shard (classes of the shard's points, minibatch order, reparameterisation noise)
is taken inside :func:`local_rng`, from a rank-specific torch stream.  A run is reproducible for
a given seed and number of processes.

Devices: with the ``nccl`` backend (GPUs) the collectives put their tensors on the process's
device ``cuda:LOCAL_RANK`` (:func:`comm_device`) and give the results back on the caller's device,
so CPU-held statistics work on either backend; with ``gloo`` tensors are reduced where they are.

Outside a sharded fit (:func:`sharded` not active) every helper here is a no-op, so the modules
run exactly as in one process.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["torchrun_env", "init_process_group", "destroy_process_group", "shard_bounds", "shard_sizes",
           "sharded", "suspended", "is_sharded", "rank", "world_size", "is_writer", "local_rng", "all_reduce_sum",
           "all_reduce_tensors", "all_reduce_scalar", "all_reduce_max", "gather_rows", "global_mean",
           "average_gradients", "sum_gradients", "gather_output", "barrier", "bytes_reduced", "reset_bytes_reduced", "local_rows",
           "global_rows", "halo_rows", "all_gather_same", "comm_device", "broadcast_"]

#: rank-specific streams are seeded by ``seed * _STREAM_STRIDE + rank + 1`` (never the global seed)
_STREAM_STRIDE = 1_000_003


@dataclass
class _Shard:
    rank: int
    world: int
    sizes: tuple  # rows per rank of the current observations (contiguous blocks, rank order)
    local_state: torch.Tensor  # the rank-specific torch generator state
    seed: int = 0
    bytes: int = 0  # bytes this rank has put into all-reduces/gathers (communication volume)
    local_cuda_state: torch.Tensor | None = None  # the rank-specific stream of the current CUDA device


_ACTIVE: _Shard | None = None
_OWN_GROUP = False


# ------------------------------------------------------------------- process group
def torchrun_env() -> dict | None:
    """``{"rank", "world_size", "local_rank"}`` from the variables ``torchrun`` sets (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``), or ``None`` outside ``torchrun``."""
    try:
        env = {"rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"]),
               "local_rank": int(os.environ.get("LOCAL_RANK", "0"))}
    except (KeyError, ValueError):
        return None
    if not (0 <= env["rank"] < env["world_size"]):
        raise ValueError(f"torchrun environment: RANK={env['rank']} outside 0..WORLD_SIZE-1={env['world_size'] - 1}")
    return env


def init_process_group(backend: str | None = None) -> tuple[int, int]:
    """Join the process group ``torchrun`` set up (``gloo`` on CPU, ``nccl`` when CUDA is
    available, unless ``backend`` says otherwise); ``(rank, world_size)``.

    Outside ``torchrun`` and without an initialised group this is a single process:
    ``(0, 1)``, nothing is initialised.  A group initialised by the caller is used as it is.
    """
    global _OWN_GROUP
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    env = torchrun_env()
    if env is None or env["world_size"] == 1:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env["local_rank"])
    dist.init_process_group(backend)
    _OWN_GROUP = True
    return dist.get_rank(), dist.get_world_size()


def destroy_process_group() -> None:
    """Leave the process group if :func:`init_process_group` created it (else nothing)."""
    global _OWN_GROUP
    if _OWN_GROUP and dist.is_initialized():
        dist.destroy_process_group()
    _OWN_GROUP = False


# ------------------------------------------------------------------------ sharding
def shard_bounds(n: int, world: int, r: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of rank ``r`` out of ``world`` for ``n`` rows: contiguous blocks in rank
    order, the first ``n % world`` ranks one row longer."""
    if world < 1 or not 0 <= r < world:
        raise ValueError(f"rank {r} outside 0..{world - 1}")
    if n < world:
        raise ValueError(f"{n} data points cannot be split over {world} processes (at least one each)")
    q, m = divmod(n, world)
    start = r * q + min(r, m)
    return start, start + q + (r < m)


def blocks_total(n_local: int, what: str) -> int:
    """The rows over every process, each holding its block ``shard_bounds(N, world, rank)`` of
    ``n_local`` rows (collective; before a sharded context, whose sizes come from here).
    ``ValueError`` naming ``what`` when the blocks are not those of a data-parallel fit."""
    if world_size() == 1:
        return int(n_local)
    local = _to_comm(torch.tensor([int(n_local)], dtype=torch.int64))
    parts = [torch.zeros_like(local) for _ in range(world_size())]
    dist.all_gather(parts, local)
    got = tuple(int(v[0]) for v in parts)
    n = sum(got)
    if got != shard_sizes(n, len(got)):
        raise ValueError(f"{what}: the processes hold {got} data points; the blocks of N={n} must be "
                         f"{shard_sizes(n, len(got))} (rows shard_bounds(N, world, rank))")
    return n


def shard_sizes(n: int, world: int) -> tuple[int, ...]:
    """Rows per rank (:func:`shard_bounds`)."""
    return tuple(b - a for a, b in (shard_bounds(n, world, r) for r in range(world)))


@contextlib.contextmanager
def sharded(n: int, seed: int | None = None, local_state: torch.Tensor | None = None):
    """Within: this process holds rank ``rank()``'s block of ``n`` rows and every helper of this
    module communicates over the process group.  ``local_state`` (a checkpoint's) or ``seed``
    starts the rank-specific stream.  With one process (no group) nothing changes."""
    global _ACTIVE
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        yield None
        return
    r, w = dist.get_rank(), dist.get_world_size()
    if local_state is None:
        g = torch.Generator()
        g.manual_seed((0 if seed is None else int(seed)) * _STREAM_STRIDE + r + 1)
        local_state = g.get_state()
    prev, _ACTIVE = _ACTIVE, _Shard(r, w, shard_sizes(n, w), local_state, 0 if seed is None else int(seed))
    try:
        yield _ACTIVE
    finally:
        _ACTIVE = prev


@contextlib.contextmanager
def suspended():
    """Within: no sharded fit is active, so every helper is a no-op and the modules run as in one
    process, for work every rank does alike on gathered data (e.g. a class start on the gathered
    latents).  The sharded fit resumes after the block."""
    global _ACTIVE
    prev, _ACTIVE = _ACTIVE, None
    try:
        yield
    finally:
        _ACTIVE = prev


def is_sharded() -> bool:
    """Whether a sharded fit is running (the helpers then communicate)."""
    return _ACTIVE is not None


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_writer() -> bool:
    """Whether this process writes files: rank 0, or any process outside a sharded fit."""
    return _ACTIVE is None or _ACTIVE.rank == 0


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def local_state() -> torch.Tensor | None:
    """The rank-specific generator state (for checkpoints), ``None`` outside a sharded fit."""
    return None if _ACTIVE is None else _ACTIVE.local_state.clone()


def set_local_state(state: torch.Tensor) -> None:
    """Restore the rank-specific generator state (a checkpoint's)."""
    if _ACTIVE is not None:
        _ACTIVE.local_state = state.clone()


def local_cuda_state() -> torch.Tensor | None:
    """The rank-specific stream of the current CUDA device (for checkpoints): ``None`` outside a
    sharded fit or before :func:`local_rng` has drawn on a GPU."""
    if _ACTIVE is None or _ACTIVE.local_cuda_state is None:
        return None
    return _ACTIVE.local_cuda_state.clone()


def set_local_cuda_state(state: torch.Tensor) -> None:
    """Restore the rank-specific CUDA stream (a checkpoint's)."""
    if _ACTIVE is not None:
        _ACTIVE.local_cuda_state = state.clone()


@contextlib.contextmanager
def local_rng():
    """Within: torch's CPU generator is this rank's own stream (draws whose shape depends on the
    shard); the global stream, identical on every rank, is untouched.  No-op in one process."""
    if _ACTIVE is None:
        yield
        return
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    glob = torch.get_rng_state()
    torch.set_rng_state(_ACTIVE.local_state)
    if cuda:  # draws on the GPU: its generator gets a rank-specific stream too
        glob_cuda = torch.cuda.get_rng_state()
        if _ACTIVE.local_cuda_state is None:
            torch.cuda.manual_seed(_ACTIVE.seed * _STREAM_STRIDE + _ACTIVE.rank + 1)
        else:
            torch.cuda.set_rng_state(_ACTIVE.local_cuda_state)
    try:
        yield
    finally:
        _ACTIVE.local_state = torch.get_rng_state()
        torch.set_rng_state(glob)
        if cuda:
            _ACTIVE.local_cuda_state = torch.cuda.get_rng_state()
            torch.cuda.set_rng_state(glob_cuda)


# -------------------------------------------------------------------- collectives
def _backend() -> str | None:
    """The process group's backend name (``"gloo"``, ``"nccl"``), ``None`` without a group."""
    if dist.is_available() and dist.is_initialized():
        return str(dist.get_backend())
    return None


def comm_device() -> torch.device | None:
    """The device the collectives must put their tensors on: ``cuda:LOCAL_RANK`` when the backend
    is ``nccl`` (it reduces GPU tensors only), ``None`` otherwise (``gloo``: the tensor's own
    device, CPU)."""
    if _backend() != "nccl":
        return None
    env = torchrun_env()
    return torch.device("cuda", env["local_rank"] if env is not None else torch.cuda.current_device())


def _to_comm(t: torch.Tensor) -> torch.Tensor:
    """``t`` on :func:`comm_device` (a copy when it moves; ``t`` itself otherwise)."""
    d = comm_device()
    return t if d is None or t.device == d else t.to(d)


def _from_comm(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A collective's result back on the caller's ``device``."""
    return t if t.device == device else t.to(device)


def _count(t: torch.Tensor) -> None:
    if _ACTIVE is not None:
        _ACTIVE.bytes += t.numel() * t.element_size()


def bytes_reduced() -> int:
    """Bytes this rank has sent into all-reduces and gathers since :func:`reset_bytes_reduced`."""
    return 0 if _ACTIVE is None else _ACTIVE.bytes


def reset_bytes_reduced() -> None:
    if _ACTIVE is not None:
        _ACTIVE.bytes = 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the ranks (a new tensor; ``t`` itself in one process)."""
    if _ACTIVE is None:
        return t
    out = _to_comm(t.detach().clone().contiguous())
    _count(out)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return _from_comm(out, t.device)


def all_reduce_tensors(tensors) -> list[torch.Tensor]:
    """Sums over the ranks of several tensors of one dtype in one all-reduce (one message: the
    latency is paid once per sweep, not once per statistic).  In one process: the tensors."""
    tensors = list(tensors)
    if _ACTIVE is None:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    flat = all_reduce_sum(flat)
    out, i = [], 0
    for t in tensors:
        out.append(flat[i:i + t.numel()].view(t.shape))
        i += t.numel()
    return out


def all_reduce_scalar(v: float) -> float:
    """Sum of a float over the ranks (float64)."""
    if _ACTIVE is None:
        return v
    return float(all_reduce_sum(torch.tensor([float(v)], dtype=torch.float64))[0])


def all_reduce_max(v: float) -> float:
    """Largest value of a float over the ranks."""
    if _ACTIVE is None:
        return v
    t = _to_comm(torch.tensor([float(v)], dtype=torch.float64))
    _count(t)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(_from_comm(t, torch.device("cpu"))[0])


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Column means of the rows of every rank, ``(D,)`` (``x.mean(0)`` in one process)."""
    if _ACTIVE is None:
        return x.mean(0)
    s, n = all_reduce_tensors([x.sum(0), torch.tensor([float(x.shape[0])], dtype=x.dtype, device=x.device)])
    return s / n


def gather_rows(t):
    """The rows of every rank concatenated in rank order (all ranks get the whole; ``t`` itself in
    one process).  Takes a tensor or a numpy array and returns the same kind; ``None`` stays."""
    if _ACTIVE is None or t is None:
        return t
    as_np = isinstance(t, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(t)) if as_np else t.detach()
    n = _to_comm(torch.tensor([x.shape[0]], dtype=torch.int64))
    ns = [torch.zeros_like(n) for _ in range(_ACTIVE.world)]
    dist.all_gather(ns, n)
    ns = [int(v) for v in _from_comm(torch.cat(ns), torch.device("cpu"))]
    pad = _to_comm(x).new_zeros((max(ns),) + tuple(x.shape[1:]))
    pad[: x.shape[0]] = _to_comm(x)
    parts = [torch.empty_like(pad) for _ in range(_ACTIVE.world)]
    _count(pad)
    dist.all_gather(parts, pad.contiguous())
    out = _from_comm(torch.cat([p[:k] for p, k in zip(parts, ns)]), x.device)
    return out.numpy() if as_np else out


def average_gradients(params) -> None:
    """Replace every parameter's gradient by its mean over the ranks, in one all-reduce (what
    ``DistributedDataParallel`` does, without wrapping the networks).  No-op in one process."""
    if _ACTIVE is None:
        return
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    summed = all_reduce_tensors([p.grad for p in params])
    for p, g in zip(params, summed):
        p.grad.copy_(g / _ACTIVE.world)


def sum_gradients(params, value: float) -> float:
    """Replace every parameter's gradient (zero where it has none) by its sum over the ranks and
    return ``value`` summed over the ranks, in one all-reduce (in float64): the data-parallel step
    of a loss whose ranks' shares are already weighted to add up to the global minibatch's."""
    params = list(params)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    summed = all_reduce_tensors([p.grad.double() for p in params] + [torch.tensor([value], dtype=torch.float64)])
    for p, g in zip(params, summed):
        p.grad = g.to(p.dtype)
    return float(summed[-1][0])


def gather_output(array: np.ndarray) -> np.ndarray | None:
    """An output array as one process would write it, for rank 0 (``None`` on the others).

    Collective: every rank calls it with its array.  An array whose first axis is the shard's
    rows on every rank (and that differs between the ranks) is a per-point output: the blocks are
    concatenated in rank order.  Any other array (a parameter, identical on every rank) is
    rank 0's.  In one process: ``array``."""
    if _ACTIVE is None:
        return array
    a = np.asarray(array)
    digest = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
    info = [None] * _ACTIVE.world
    dist.all_gather_object(info, (a.shape, str(a.dtype), digest))
    per_point = (a.ndim >= 1 and all(len(s) >= 1 and s[0] == n for (s, _, _), n in zip(info, _ACTIVE.sizes))
                 and len({d for _, _, d in info}) > 1 and len({(s[1:], t) for s, t, _ in info}) == 1)
    if not per_point:
        return a if _ACTIVE.rank == 0 else None
    whole = gather_rows(a)
    return whole if _ACTIVE.rank == 0 else None


def local_rows() -> slice:
    """This rank's rows of the whole data (``slice(None)`` outside a sharded fit)."""
    if _ACTIVE is None:
        return slice(None)
    start = sum(_ACTIVE.sizes[: _ACTIVE.rank])
    return slice(start, start + _ACTIVE.sizes[_ACTIVE.rank])


def global_rows(n_local: int) -> int:
    """Rows of the whole data: the sum of the shards' sizes (``n_local`` outside a sharded fit)."""
    return n_local if _ACTIVE is None else sum(_ACTIVE.sizes)


def halo_rows(x: np.ndarray, before: int, after: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``before`` rows of the whole data just before this rank's block and the ``after`` rows
    just after it (fewer at the ends of the data; from any rank, also when a block is shorter
    than the halo), for recursions over a chain split into blocks.  Collective; one all-gather of
    ``2 max(before, after)`` rows per rank.  Outside a sharded fit: two empty arrays.

    Args:
        x: ``(n_local, ...)`` this rank's rows (numpy).
    Returns:
        ``(rows before (b, ...), rows after (a, ...))``, ``b <= before``, ``a <= after``.
    """
    x = np.asarray(x)
    empty = x[:0]
    if _ACTIVE is None:
        return empty, empty
    k = max(before, after, 1)
    n = x.shape[0]
    start = sum(_ACTIVE.sizes[: _ACTIVE.rank])
    own = np.unique(np.concatenate([np.arange(min(k, n)), np.arange(max(n - k, 0), n)]))
    idx = gather_rows(torch.from_numpy(own + start).unsqueeze(1)).numpy()[:, 0]
    rows = gather_rows(np.ascontiguousarray(x[own]))
    table = dict(zip(idx.tolist(), range(len(idx))))
    total = sum(_ACTIVE.sizes)
    lo, hi = range(max(start - before, 0), start), range(start + n, min(start + n + after, total))
    pick = lambda r: rows[[table[i] for i in r]] if len(r) else empty  # noqa: E731
    return pick(lo), pick(hi)


def all_gather_same(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` (the same shape on every rank) stacked in rank order, ``(W, ...)``: one
    all-gather, without :func:`gather_rows`'s exchange of sizes.  ``t[None]`` in one process."""
    if _ACTIVE is None:
        return t.unsqueeze(0)
    device = t.device
    t = _to_comm(t.detach().contiguous())
    parts = [torch.empty_like(t) for _ in range(_ACTIVE.world)]
    _count(t)
    dist.all_gather(parts, t)
    return _from_comm(torch.stack(parts), device)


def broadcast_(tensors, src: int = 0) -> None:
    """Overwrite ``tensors`` (in place, on every rank) by rank ``src``'s, in one broadcast of one
    dtype's flattened values per dtype.  No-op in one process."""
    tensors = [t for t in tensors]
    if _ACTIVE is None or not tensors:
        return
    for dtype in sorted({t.dtype for t in tensors}, key=str):
        group = [t for t in tensors if t.dtype == dtype]
        flat = _to_comm(torch.cat([t.detach().reshape(-1) for t in group]))
        _count(flat)
        dist.broadcast(flat, src)
        flat, i = _from_comm(flat, group[0].device), 0
        with torch.no_grad():
            for t in group:
                t.copy_(flat[i:i + t.numel()].view(t.shape))
                i += t.numel()
