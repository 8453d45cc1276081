"""``serket-pyro joint``: the joint recipe (VAE+GMM, or VAE+GMM+MM, fitted as one Pyro program),
then the parameters handed back to the modules, which recognise the data with them.

Default start (``--init gmm``): VaDE's networks (784-500-500-2000-10) pretrained as an autoencoder
with a neighbour-embedding term (:mod:`serket_pyro.joint.neighbour_embedding`), a GMM module on the
latents, then the joint objective with full class covariances.  ``--init modules`` runs the
message-passing system of the tutorial first (``--iterations`` outer iterations) and starts from
its networks, GMM and Markov model.
"""

from __future__ import annotations

import time

import torch

from .. import datasets
from .. import distributed as _dist
from ..joint import joint_model
from ..metrics import accuracy
from ..models import vae_gmm, vae_gmm_mm
from ..modules.vae import mlp_networks
from ..output import set_output_root, set_run_id
from ..seed import set_seed
from .runner import check_torch_device, require_data_file

__all__ = ["run_joint"]


def run_joint(args) -> dict:
    """Run the joint recipe with the flags of :func:`~serket_pyro.app.arguments.add_joint_arguments`.

    Returns
    -------
    dict
        ``system`` (the modules, in recognition mode after the hand-back), ``joint`` (the
        :class:`~serket_pyro.joint.JointModel`), ``seconds``, ``mp_accuracy`` (message passing,
        ``--init modules`` only, else ``None``), ``joint_accuracy`` and ``module_accuracy`` (the GMM
        module recognising with the handed-back parameters; ``None`` without labels), ``lines``
        (what the command prints).
    """
    if args.device is not None:
        check_torch_device(args.device)
    distributed = bool(getattr(args, "distributed", False))
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    set_output_root(args.output)
    set_run_id(None)
    require_data_file(args.data_dir, "serket_tutorial.npz")
    d = datasets.load_tutorial(root=args.data_dir)  # 8-bit images: the joint model keeps them as bytes
    images, category, source = d.images[:args.n], d.category[:args.n], "serket_tutorial.npz"
    rank, world = _dist.init_process_group() if distributed else (0, 1)
    t0 = time.perf_counter()
    if world == 1:
        return _run_joint(args, images, category, source, t0, _message_passing(args, images, category, False))
    N = len(images)  # each process keeps its block of rows of the images (and their labels)
    a, b = _dist.shard_bounds(N, world, rank)
    images, category = images[a:b], category[a:b]
    start = _message_passing(args, images, category, "shards")  # (its own data-parallel fit)
    with _dist.sharded(N, seed=args.seed):
        return _run_joint(args, images, category, source, t0, start)


def _message_passing(args, images, category, distributed):
    """``--init modules``: the tutorial system fitted by message passing (``--iterations`` outer
    iterations; data-parallel on this process's rows with ``distributed="shards"``), the joint
    fit's start; ``(system, accuracy)``.  ``None`` for the other starts."""
    if args.init != "modules":
        return None
    system = (vae_gmm_mm.build if args.mm else vae_gmm.build)(images, category, device=args.device)
    system.fit(n_iter=args.iterations, seed=args.seed, progress=args.progress and _dist.rank() == 0,
               distributed=distributed)
    return system, system["gmm"].metrics_.get("accuracy")


def _run_joint(args, images, category, source, t0, start) -> dict:
    """:func:`run_joint` on ``images`` ``(n, D)``: all of them, or this process's rows inside
    :func:`serket_pyro.distributed.sharded` (scores on every process's rows, gathered);
    ``start``: :func:`_message_passing`'s result."""
    lines = []
    build = vae_gmm_mm.build if args.mm else vae_gmm.build
    mp_acc = None
    if start is not None:                                     # message passing as pre-training
        system, mp_acc = start
        lines.append(f"message passing: accuracy {mp_acc:.3f}")
    else:                                                     # the same modules, VaDE's networks
        encoder, decoder = mlp_networks(images.shape[1], args.latent_dim)
        system = build(images, category, latent_dim=args.latent_dim, batch_size=args.batch_size,
                       device=args.device)
        system["vae"].encoder, system["vae"].decoder = encoder, decoder
    jm = joint_model(system, chunk_len=args.chunk_len,       # ... composed into one Pyro model
                     covariance=args.covariance or ("diag" if args.init == "modules" else "full"))
    jm.fit(args.epochs, pretrain_epochs=args.pretrain_epochs if args.init != "modules" else 0,
           pretrain_kl_weight=0.0, pretrain_neighbour_weight=args.neighbour_weight,
           n_neighbours=args.neighbours, init=args.init, gmm_prior=args.gmm_prior, progress=args.progress)
    seconds = time.perf_counter() - t0
    joint_acc = float(accuracy(_dist.gather_rows(category), _dist.gather_rows(jm.predict().argmax(-1).cpu().numpy())))
    lines.append(f"joint fit on {source}: {seconds:.1f} s, accuracy {joint_acc:.3f}")

    # hand the parameters back: the modules now recognise with the jointly learned networks/classes
    jm.to_modules()
    for m in system.modules.values():
        if m.learnable:
            m.mode = "recog"
            m.update()
    module_acc = system["gmm"].metrics_.get("accuracy")
    lines.append(f"GMM module (recog): accuracy {module_acc:.3f}; files in {system['gmm'].output_dir}")
    return {"system": system, "joint": jm, "seconds": seconds, "mp_accuracy": mp_acc,
            "joint_accuracy": joint_acc, "module_accuracy": module_acc, "lines": lines}
