"""VAE+GMM (and VAE+GMM+MM) fitted jointly as ONE Pyro program (VaDE-style), then handed back to
the modules.

    python examples/joint_vae_gmm.py                         # 3,000 tutorial images
    python examples/joint_vae_gmm.py --mm                    # with the Markov model over the sequence
    python examples/joint_vae_gmm.py --mm --init modules --epochs 50   # message passing first, then joint
    python examples/joint_vae_gmm.py --n 300 --pretrain-epochs 2 --epochs 2    # a quick try
"""

import argparse
import os
import time

import torch

import serket_pyro as srk
from serket_pyro.datasets import load_tutorial
from serket_pyro.joint import joint_model
from serket_pyro.metrics import accuracy
from serket_pyro.models import vae_gmm, vae_gmm_mm


def main(args):
    torch.set_num_threads(args.threads)
    srk.set_seed(args.seed)
    srk.set_output_root(args.output)
    d = load_tutorial(os.environ.get("SERKET_PYRO_DATA", "/work/shared/data"))
    images, category = d.images[:args.n], d.category[:args.n]

    build = vae_gmm_mm.build if args.mm else vae_gmm.build
    system = build(images, category, device=args.device)      # the same modules as message passing
    t0 = time.perf_counter()
    if args.init == "modules":                                # message passing as pre-training
        system.fit(n_iter=args.iterations, seed=args.seed)
        print(f"message passing: accuracy {system['gmm'].metrics_['accuracy']:.3f}")
    jm = joint_model(system, chunk_len=args.chunk_len)        # ... composed into one Pyro model
    jm.fit(args.epochs, pretrain_epochs=args.pretrain_epochs if args.init == "kmeans" else 0,
           pretrain_kl_weight=1.0, init=args.init)
    print(f"joint fit: {time.perf_counter() - t0:.1f} s, "
          f"accuracy {accuracy(category, jm.predict().argmax(-1).cpu().numpy()):.3f}")

    # hand the parameters back: the modules now recognise with the jointly learned networks/classes
    jm.to_modules()
    for m in system.modules.values():
        if m.learnable:
            m.mode = "recog"
            m.update()
    print(f"GMM module (recog): accuracy {system['gmm'].metrics_['accuracy']:.3f}; files in "
          f"{system['gmm'].output_dir}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mm", action="store_true")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--init", default="kmeans", choices=["kmeans", "modules"],
                   help="kmeans: pretrain the VAE alone, k-means on its latents; modules: run the "
                        "message-passing system (--iterations outer iterations) and start from it")
    p.add_argument("--iterations", type=int, default=5, help="message-passing iterations (--init modules)")
    p.add_argument("--pretrain-epochs", type=int, default=150)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--chunk-len", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--output", default="output_joint")
    main(p.parse_args())
