"""HAC+LDA (the original's ``examples/HAC+LDA``): wav files -> HAC counts -> MLDA, on FSDD recordings.

    python examples/original/hac_lda.py                      # the original's settings: 9 wavs, ks=[1, 1, 1]
    python examples/original/hac_lda.py --digits 0 1 2 3 4 5 6 7 8 9 --takes 0 1 2 3 4 5 6 7 8 9 --ks 20 20 20

The original classified nine recordings of speaker "jackson" (digits 0-2, takes 0-2) of the Free
Spoken Digit Dataset with ``hac.HACFeatureExtractor(wavs, [1, 1, 1])`` and ``MLDA(3, [200])``.
Here the recordings come from ``fsdd.npz`` and are written as 16-bit PCM wav files to a temporary
folder, which :class:`serket_pyro.modules.hac.HACFeatureExtractor` reads, as the original did.
With one codeword per stream (the original's ``ks``) every bin counts all frame pairs: the
features are the utterance's length only; ``--ks 20 20 20`` gives real acoustic codebooks.
"""

import argparse
import os
import sys
import tempfile
import time
import wave

import numpy as np

import serket_pyro as srk
from serket_pyro import hac, mlda
from serket_pyro.datasets import load_fsdd


def write_wavs(folder, fsdd, rows):
    """``<digit>_<speaker>_<take>.wav`` (16-bit PCM mono) of the FSDD recordings ``rows``."""
    recs, paths = fsdd.recordings(), []
    for i in rows:
        p = os.path.join(folder, f"{fsdd.digit[i]}_{fsdd.speaker_names[fsdd.speaker[i]]}_{fsdd.take[i]}.wav")
        with wave.open(p, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(fsdd.sample_rate))
            w.writeframes(np.asarray(recs[i], dtype="<i2").tobytes())
        paths.append(p)
    return paths


def main(args):
    t0 = time.perf_counter()
    srk.set_seed(args.seed)
    srk.set_output_root(args.output)
    f = load_fsdd(root=args.data_dir)
    unknown = [s for s in args.speakers if s not in list(f.speaker_names)]
    if unknown:
        raise ValueError(f"unknown FSDD speakers {unknown}; the speakers are {list(f.speaker_names)}")
    speakers = [list(f.speaker_names).index(s) for s in args.speakers]
    rows = [i for d in args.digits for s in speakers for t in args.takes
            for i in np.flatnonzero((f.digit == d) & (f.speaker == s) & (f.take == t))]
    category = f.digit[rows]
    with tempfile.TemporaryDirectory() as tmp:
        wavs = write_wavs(tmp, f, rows)
        obs1 = hac.HACFeatureExtractor(wavs, args.ks, lags=args.lags, seed=args.seed)
    mlda1 = mlda.MLDA(len(args.digits), [args.weight], category=category)
    mlda1.connect(obs1)
    for _ in range(args.iterations):
        mlda1.update()
    acc = mlda1.metrics_["accuracy"]
    print(f"HAC+LDA on {len(wavs)} FSDD wav files ({', '.join(args.speakers)}; digits {args.digits}): "
          f"MLDA accuracy {acc:.3f} in {time.perf_counter() - t0:.1f} s")
    return acc


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--speakers", nargs="+", default=["jackson"], help="FSDD speakers (original: jackson)")
    p.add_argument("--digits", type=int, nargs="+", default=[0, 1, 2], help="digits (original: 0 1 2)")
    p.add_argument("--takes", type=int, nargs="+", default=[0, 1, 2], help="takes per digit (original: 0 1 2)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 1, 1], help="codebook sizes (original: 1 1 1)")
    p.add_argument("--lags", type=int, nargs="+", default=[5, 2], help="co-occurrence lags (original: 5 2)")
    p.add_argument("--weight", type=float, default=200.0, help="MLDA modality weight (original: 200)")
    p.add_argument("--iterations", type=int, default=1, help="MLDA updates (original: 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="folder of fsdd.npz (default: $SERKET_PYRO_DATA)")
    p.add_argument("--output", default=os.path.join("runs", "hac_lda"))
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
