"""A compiled joint program (:class:`~serket_pyro.joint.compiler.JointProgram`) fitted data-parallel
over the processes of a ``torch.distributed`` group (``torchrun``).

Shard-holding programs (the way to divide memory): each process builds the program inside
:func:`serket_pyro.distributed.sharded` ``(N)`` on its block of rows of every observation
(:func:`~serket_pyro.distributed.shard_bounds` ``(N, W, rank)``), so it holds only its rows and the
local guide parameters of its rows::

    rank, world = distributed.init_process_group()
    a, b = distributed.shard_bounds(N, world, rank)
    srk.set_seed(0)                                 # alike on every process
    with distributed.sharded(N, seed=0):
        gmm.connect(srk.Observation(x[a:b]))        # this rank's rows
        program = joint_program(gmm)
        losses = fit_data_parallel(program, 50, batch_size=256)
        labels = distributed.gather_output(program.predict(gmm))   # rank 0: all N, in order

Every process draws the same shuffled global minibatches over the ``N`` points (the global stream,
seeded alike); for each it computes the ELBO of the minibatch's members in its block (mapped to
its local rows), weighted by their share ``len(part) / len(b)``, and the gradients of the global
parameters and networks are summed over the processes in one all-reduce per step (a shard's local
parameters are its own and are not reduced) before the same Adam step everywhere.  The sum of the
weighted shares is the one-process minibatch loss, so with no sampled latent (class sites
enumerated, chains summed) a run on ``W`` processes follows the one-process run to rounding;
sampled latents (a VAE's ``z``) draw their noise from each rank's own stream
(:func:`~serket_pyro.distributed.local_rng`), the same ELBO in distribution.  With a Markov chain
each process cuts its stretch of the chain into chunks, so chunks are cut at the shard edges (the
one-process run cuts the same chunks when every shard's length is a multiple of ``chunk_len``).
The posteriors (:meth:`~serket_pyro.joint.compiler.JointProgram.class_log_posterior`,
``predict``, ``latent_means``) are the shard's rows; a chain's by the exact sharded
forward-backward over the whole sequence.

A program built on the whole data (outside the context, alike on every process) is fitted the
same way: each process computes its block of every minibatch; it holds every point, so memory does
not divide and the local parameters' gradients ride in the all-reduce.
"""

from __future__ import annotations

import contextlib

from .. import distributed as _dist

__all__ = ["fit_data_parallel"]


def fit_data_parallel(program, epochs: int = 100, *, batch_size: int | None = None, lr: float = 1e-2,
                      lr_networks: float = 1e-3, lr_local: float | None = None, seed: int = 0,
                      progress: bool = False, callback=None) -> list[float]:
    """:meth:`JointProgram.fit <serket_pyro.joint.compiler.JointProgram.fit>` over the processes of
    the current process group; ``program.fit`` itself in one process.

    Args:
        program: a :class:`~serket_pyro.joint.compiler.JointProgram`: built inside
            ``distributed.sharded(N)`` on the rank's rows (shard-holding), or on the whole data
            alike on every process.
        epochs, batch_size, lr, lr_networks, lr_local, progress, callback: as ``JointProgram.fit``;
            ``batch_size`` is the global minibatch (points, or chunks' rows with a chain).
        seed: starts each rank's own stream (sampled latents' noise) when no
            ``distributed.sharded`` context is active (an active one's streams are used); set the
            global seed (:func:`serket_pyro.set_seed`) alike on every rank before building the program.

    Returns:
        The epoch losses (mean negative ELBO per point over every rank's shares), the same on
        every process.
    """
    kw = dict(batch_size=batch_size, lr=lr, lr_networks=lr_networks, lr_local=lr_local, progress=progress,
              callback=callback)
    if _dist.world_size() == 1:
        return program.fit(epochs, **kw)
    ctx = contextlib.nullcontext() if _dist.is_sharded() else _dist.sharded(program.N_global, seed=seed)
    with ctx:                                             # JointProgram.fit's data-parallel step
        return program.fit(epochs, **kw)
