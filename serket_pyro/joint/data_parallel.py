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

import logging

import torch

from .. import distributed as _dist
from ..validation import check_positive_float, check_positive_int

__all__ = ["fit_data_parallel"]

_log = logging.getLogger(__name__)


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
    epochs = check_positive_int(epochs, "epochs", "fit_data_parallel", minimum=0)
    bs = check_positive_int(program.N if batch_size is None else batch_size, "batch_size", "fit_data_parallel")
    lr = check_positive_float(lr, "lr", "fit_data_parallel")
    lr_networks = check_positive_float(lr_networks, "lr_networks", "fit_data_parallel")
    lr_local = check_positive_float(10 * lr if lr_local is None else lr_local, "lr_local", "fit_data_parallel")
    r, W = _dist.rank(), _dist.world_size()
    program._claim_param_store()
    groups = [{"params": list(program._params.parameters()), "lr": lr},
              {"params": list(program._locals.parameters()), "lr": lr_local},
              {"params": list(program._nets.parameters()), "lr": lr_networks}]
    groups = [g for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.Adam(groups)
    elbo = program.loss_fn()
    losses = []
    with _dist.sharded(program.N, seed=seed):
        for ep in range(epochs):
            total = 0.0
            batches = program._batches(bs)             # the global stream: the same on every rank
            for b in batches:
                part = b.tensor_split(W)[r]
                opt.zero_grad(set_to_none=True)
                value = 0.0
                if len(part):
                    with _dist.local_rng():            # this rank's noise
                        loss = elbo.differentiable_loss(program.model, program.guide, part, None)
                    (loss * (len(part) / len(b))).backward()
                    value = float(loss.detach()) * len(part)
                grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
                summed = _dist.all_reduce_tensors(grads + [torch.tensor([value], dtype=grads[0].dtype)])
                for p, g in zip(params, summed):
                    p.grad = g.to(p.dtype)
                opt.step()
                total += float(summed[-1][0])
            n = sum(len(b) for b in batches)
            losses.append(total / n)
            _log.log(logging.INFO if progress else logging.DEBUG, "joint epoch %d: loss %.3f", ep + 1, losses[-1])
    program.loss_history_.extend(losses)
    return losses
