"""A compiled joint program (:class:`~serket_pyro.joint.compiler.JointProgram`) fitted data-parallel
over the processes of a ``torch.distributed`` group (``torchrun``).

Every process builds the same program and draws the same shuffled minibatches from the global
stream (seeded alike on every rank, as in :mod:`serket_pyro.distributed`); each computes the ELBO
of its share of every minibatch (its contiguous block of the minibatch's points, or chunks with a
Markov chain: a ``DistributedSampler`` that splits each global minibatch), weighted by the share's
size, and the gradients are summed over the processes (one all-reduce per step) before the same
Adam step on every rank.  The sum of the weighted shares is the one-process minibatch loss, so
with no sampled latent (class sites enumerated, chains summed) a run on ``W`` processes follows
the one-process run to rounding; sampled latents (a VAE's ``z``) draw their noise from each rank's
own stream (:func:`~serket_pyro.distributed.local_rng`), the same ELBO in distribution.

Every process holds the whole program (the data and the local guide parameters of every point):
the compute of an epoch is divided by ``W``, the memory is not, and the all-reduce carries the
local parameters' gradients too (zero outside the step's points).
"""

from __future__ import annotations

from .. import distributed as _dist

__all__ = ["fit_data_parallel"]


def fit_data_parallel(program, epochs: int = 100, *, batch_size: int | None = None, lr: float = 1e-2,
                      lr_networks: float = 1e-3, lr_local: float | None = None, seed: int = 0,
                      progress: bool = False) -> list[float]:
    """:meth:`JointProgram.fit <serket_pyro.joint.compiler.JointProgram.fit>` over the processes of
    the current process group; ``program.fit`` itself in one process.

    Args:
        program: a :class:`~serket_pyro.joint.compiler.JointProgram`, built alike on every process.
        epochs, batch_size, lr, lr_networks, lr_local, progress: as ``JointProgram.fit``;
            ``batch_size`` is the global minibatch (points, or chunks' rows with a chain).
        seed: starts each rank's own stream (sampled latents' noise); set the global seed
            (:func:`serket_pyro.set_seed`) alike on every rank before building the program.

    Returns:
        The epoch losses (mean negative ELBO per point over every rank's shares), the same on
        every process.
    """
    if _dist.world_size() == 1:
        return program.fit(epochs, batch_size=batch_size, lr=lr, lr_networks=lr_networks, lr_local=lr_local,
                           progress=progress)
    with _dist.sharded(program.N, seed=seed):          # JointProgram.fit's data-parallel step
        return program.fit(epochs, batch_size=batch_size, lr=lr, lr_networks=lr_networks, lr_local=lr_local,
                           progress=progress)
