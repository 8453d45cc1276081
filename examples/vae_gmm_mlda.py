"""The Serket VAE+GMM+MLDA tutorial in serket-pyro.

Run ``python examples/vae_gmm_mlda.py`` (tutorial settings) or with small numbers to try it quickly:
``python examples/vae_gmm_mlda.py --n 300 --epochs 2 --iterations 2``.  The VAE deskews the images (``deskew=True``);
``--no-deskew`` feeds raw pixels as the tutorial does.
"""

import argparse
import time

import torch
from tqdm.auto import tqdm

import serket_pyro as srk
from serket_pyro import gmm, mlda, vae
from serket_pyro.app.runner import add_tutorial_arguments, load_inputs, print_result


def main(args):
    torch.set_num_threads(args.threads)
    srk.set_seed(args.seed)
    srk.set_output_root(args.output)
    images, speech, category, source = load_inputs(args.data_dir, args.n, offline_fallback=False)
    print(f"data: {len(images)} points from {source}")

    obs1 = srk.Observation(images)  # image data
    obs2 = srk.Observation(speech)  # speech data
    vae1 = vae.VAE(args.latent_dim, itr=args.epochs, batch_size=args.batch_size, deskew=args.deskew,
                   device=args.device)
    gmm1 = gmm.GMM(args.classes, category=category, device=args.device)
    mlda1 = mlda.MLDA(args.classes, [200, 200], category=category, device=args.device)
    vae1.connect(obs1)  # connect obs1 to vae1
    gmm1.connect(vae1)  # connect vae1 to gmm1
    mlda1.connect(obs2, gmm1)  # connect obs2 and gmm1 to mlda1
    modules = [vae1, gmm1, mlda1]
    result = mlda1

    t0 = time.perf_counter()
    for i in tqdm(range(args.iterations), desc="outer iteration", disable=args.no_progress):
        for m in modules:
            m.update()
    seconds = time.perf_counter() - t0

    return print_result("VAE+GMM+MLDA", result, args.iterations, seconds)


if __name__ == "__main__":
    parser = add_tutorial_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    main(parser.parse_args())
