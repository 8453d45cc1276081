"""HACFeatureExtractor: speech in, histograms of acoustic co-occurrences out (the original ``hac`` module).

An observation computed from speech: every utterance (a wav file, an array of samples, or MFCC
frames already computed) becomes MFCCs (:func:`serket_pyro.features.mfcc`), then the counts of
co-occurring codeword pairs of its static / delta / delta-delta streams
(:class:`serket_pyro.features.HACExtractor`, Van hamme, Interspeech 2008).  The codebooks are
learned from the given utterances, or taken from a fitted extractor, and they are this module's
learned state: :func:`~serket_pyro.save_graph` saves them with the graph and
:func:`~serket_pyro.load_graph` applies them, unchanged, to new speech -- a graph trained on speech
can recognise new recordings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from ..features.speech import HACExtractor, mfcc
from ..features.wav import read_wav
from ..messages import PointMessage
from ..module import Module, Observation

__all__ = ["HACFeatureExtractor", "MFCC_PARAMS"]

#: keyword arguments of :func:`~serket_pyro.features.mfcc` this module passes on (deltas are the
#: HAC's streams, so ``n_deltas`` is not among them)
MFCC_PARAMS = ("n_mfcc", "n_mels", "win_ms", "hop_ms", "preemphasis", "n_fft", "f_min", "f_max", "log_floor")
#: librosa's names (the original's ``**mfcc_params``) -> ours
_LIBROSA = {"hop_length": "hop_ms (milliseconds, default 10)", "win_length": "win_ms (milliseconds, default 25)",
            "sr": "sample_rate", "n_deltas": "nothing (the delta streams are the HAC's)"}


class HACFeatureExtractor(Observation):
    """Histogram-of-acoustic-co-occurrence counts of utterances, as an observation.

    Each utterance gives ``n_lags * sum_s ks[s] ** 2`` counts: for stream ``s`` (static MFCCs,
    deltas, delta-deltas) and lag ``l``, the number of frames ``t`` whose codewords are
    ``(i, j)`` at ``t`` and ``t + l``.  Counts are a bag of acoustic "words", what MLDA models.

    Parameters
    ----------
    filenames : sequence
        The ``N`` utterances, each a path to a mono integer-PCM ``.wav`` file (the original's
        input), a 1-D array of samples at ``sample_rate``, or a 2-D ``(T_i, D)`` array of static
        MFCC frames (e.g. UCI Spoken Arabic Digit).  All of one kind.
    ks : int or sequence of 3 int, optional
        Codebook size of each stream (static, delta, delta-delta); an int is used for all three.
        Default ``[20, 20, 20]`` (the tutorial's); with ``extractor`` given, its sizes.
    lags : sequence of int, optional
        Frame lags of the co-occurrences (one histogram per lag, concatenated).  Default
        ``[5, 2]`` (the original's); with ``extractor`` given, its lags.
    name : str, default "HACFeatureExtracter"
        Short name (the original's spelling).
    sample_rate : float, optional
        Hz of array-of-samples utterances (wav files carry their own).
    cmn : bool, default False
        Subtract each utterance's mean MFCC (cepstral mean normalisation: removes a fixed
        microphone response; useful when speakers were recorded with different microphones).
    standardize, n_iter, seed, max_train_frames
        Codebook learning, see :class:`~serket_pyro.features.HACExtractor`.
    extractor : HACExtractor, optional
        Fitted codebooks to use instead of learning them (e.g. the training utterances' for test
        utterances).
    mfcc_params : dict, optional
        Keyword arguments of :func:`~serket_pyro.features.mfcc` (:data:`MFCC_PARAMS`); may also
        be given as keywords, as in the original.

    Attributes
    ----------
    extractor_ : HACExtractor
        The fitted extractor (its codebooks, means and scales are this module's state).
    lengths_ : ndarray of int, shape (N,)
        Frames of each utterance.
    """

    _fitted = ("codebooks_", "means_", "scales_")
    _unsaved_params = ("filenames", "extractor", *Module._unsaved_params)
    #: what ``serket-pyro recog`` gives this observation: speech, not an array of features
    input_kind = "speech"
    test_args: dict = {}

    def __init__(self, filenames, ks=None, lags=None, name: str = "HACFeatureExtracter", *,
                 sample_rate: float | None = None, cmn: bool = False, standardize: bool = True, n_iter: int = 100,
                 seed: int = 0, max_train_frames: int | None = None, extractor: HACExtractor | None = None,
                 mfcc_params: dict | None = None, **more_mfcc_params):
        Module.__init__(self, name, learnable=False)
        self.mfcc_params = self._check_mfcc_params(mfcc_params, more_mfcc_params)
        self.sample_rate, self.cmn = sample_rate, bool(cmn)
        self.standardize, self.n_iter, self.seed, self.max_train_frames = standardize, n_iter, seed, max_train_frames
        if not isinstance(cmn, (bool, np.bool_)):
            raise ValueError(f"{self.name}: cmn must be True or False, got {cmn!r}")
        if extractor is not None:
            if not isinstance(extractor, HACExtractor) or extractor.codebooks_ is None:
                raise ValueError(f"{self.name}: extractor must be a fitted serket_pyro.features.HACExtractor, "
                                 f"got {'an unfitted one' if isinstance(extractor, HACExtractor) else type(extractor).__name__}")
            self._check_same(ks, extractor.ks, "ks", lambda k: (k,) * len(extractor.ks) if isinstance(k, int)
                             else tuple(k))
            self._check_same(lags, extractor.lags, "lags", tuple)
            ext = extractor
        else:
            ks = [20, 20, 20] if ks is None else ks
            lags = [5, 2] if lags is None else lags
            try:
                ext = HACExtractor(ks, lags, standardize=standardize, n_iter=n_iter, seed=seed,
                                   max_train_frames=max_train_frames)
            except ValueError as e:
                raise ValueError(f"{self.name}: {str(e).removeprefix('HACExtractor: ')}") from None
        self.ks = list(ext.ks)
        self.lags = list(ext.lags)
        self.filenames = filenames
        self.extractor = extractor
        frames = self._frames(filenames)
        if extractor is None:
            ext.fit(frames)
        elif frames[0].shape[1] != ext.n_features_in_:
            raise ValueError(f"{self.name}: the extractor was fitted on frames of {ext.n_features_in_} coefficients, "
                             f"these utterances have {frames[0].shape[1]}")
        self.extractor_ = ext
        self.codebooks_, self.means_, self.scales_ = ext.codebooks_, ext.means_, ext.scales_
        self.lengths_ = np.array([len(f) for f in frames], dtype=np.int64)
        counts = ext.transform(frames)
        self._forward_msg = PointMessage(torch.as_tensor(counts, dtype=torch.float64))

    # ------------------------------------------------------------------ checks
    def _check_same(self, given, fitted, what, norm):
        if given is None:
            return
        try:
            same = norm(given) == tuple(fitted)
        except TypeError:
            same = False
        if not same:
            raise ValueError(f"{self.name}: {what}={given!r} differs from the extractor's {list(fitted)}; "
                             f"leave {what} out to use the extractor's")

    def _check_mfcc_params(self, mfcc_params, more) -> dict:
        if mfcc_params is not None and not isinstance(mfcc_params, dict):
            raise ValueError(f"{self.name}: mfcc_params must be a dict of mfcc() keyword arguments, "
                             f"got {type(mfcc_params).__name__}")
        params = dict(mfcc_params or {})
        both = sorted(set(params) & set(more))
        if both:
            raise ValueError(f"{self.name}: {both} given both in mfcc_params and as keywords")
        params.update(more)
        for k in params:
            if k in _LIBROSA:
                raise ValueError(f"{self.name}: the MFCC parameter {k!r} (librosa's) is {_LIBROSA[k]} here")
            if k not in MFCC_PARAMS:
                raise ValueError(f"{self.name}: unknown argument {k!r}; MFCC parameters are {list(MFCC_PARAMS)}")
        return params

    def _frames(self, utterances) -> list[np.ndarray]:
        """Static MFCC frames ``(T_i, D)`` of every utterance (after CMN when asked)."""
        if isinstance(utterances, (str, os.PathLike)) or not isinstance(utterances, (Sequence, np.ndarray)):
            raise ValueError(f"{self.name}: filenames must be a list of utterances (wav paths, sample arrays or "
                             f"MFCC frame arrays), got {type(utterances).__name__}")
        if len(utterances) == 0:
            raise ValueError(f"{self.name}: no utterances given")
        kinds = {"wav" if isinstance(u, (str, os.PathLike)) else "array" for u in utterances}
        if len(kinds) > 1:
            raise ValueError(f"{self.name}: mix of wav paths and arrays; give utterances of one kind")
        out = []
        for i, u in enumerate(utterances):
            if isinstance(u, (str, os.PathLike)):
                rate, x = read_wav(u, self.name)
                out.append(self._mfcc(x, rate, i))
                continue
            a = np.asarray(u.detach().cpu() if isinstance(u, torch.Tensor) else u)
            if a.dtype.kind not in "biuf" or a.ndim not in (1, 2):
                raise ValueError(f"{self.name}: utterance {i} must be a wav path, 1-D samples or 2-D (T, D) MFCC "
                                 f"frames, got {'dtype ' + str(a.dtype) if a.dtype.kind not in 'biuf' else f'shape {a.shape}'}")
            if not np.isfinite(a).all():
                raise ValueError(f"{self.name}: utterance {i} contains NaN or infinite values")
            if a.ndim == 1:
                if self.sample_rate is None:
                    raise ValueError(f"{self.name}: utterance {i} is 1-D audio samples; give sample_rate=")
                out.append(self._mfcc(a, self.sample_rate, i))
            else:
                if len(a) == 0:
                    raise ValueError(f"{self.name}: utterance {i} has no frames")
                if self.mfcc_params:
                    raise ValueError(f"{self.name}: mfcc_params {sorted(self.mfcc_params)} apply to audio, but "
                                     f"utterance {i} is MFCC frames already")
                out.append(a.astype(np.float64))
        D = {f.shape[1] for f in out}
        if len(D) > 1:
            raise ValueError(f"{self.name}: utterances have frames of different sizes {sorted(D)}")
        if self.cmn:
            out = [f - f.mean(0) for f in out]
        return out

    def _mfcc(self, x, rate, i) -> np.ndarray:
        try:
            return mfcc(x, rate, n_deltas=0, **self.mfcc_params).numpy()
        except ValueError as e:
            raise ValueError(f"{self.name}: utterance {i}: {e}") from None

    # ------------------------------------------------------------- persistence
    def get_config(self) -> dict:
        return {"ks": list(self.ks), "lags": list(self.lags), "sample_rate": self.sample_rate, "cmn": self.cmn,
                "standardize": self.standardize, "n_iter": self.n_iter, "seed": self.seed,
                "max_train_frames": self.max_train_frames, "mfcc_params": dict(self.mfcc_params)}

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The codebooks only (the counts are recomputed from the speech given when loading)."""
        out = {f"state/{k}": v for k, v in self.state_dict().items()}
        out["state/n_features_in"] = torch.tensor(int(self.extractor_.n_features_in_))
        return out

    @classmethod
    def from_saved(cls, utterances, config: dict, state: dict[str, torch.Tensor], name: str):
        """Rebuild a saved extractor on new ``utterances`` (what :func:`~serket_pyro.load_graph` calls).

        Parameters
        ----------
        utterances : sequence
            As ``filenames`` of the constructor.
        config : dict
            The saved :meth:`get_config`.
        state : dict of str to Tensor
            The saved ``codebooks.<s>``, ``means.<s>``, ``scales.<s>`` and ``n_features_in``.
        name : str
            The saved module name (named in the errors).

        Returns
        -------
        HACFeatureExtractor
            Its counts computed with the saved codebooks.

        Raises
        ------
        ValueError
            A config or state that does not fit (naming ``name``).
        """
        expected = {"ks", "lags", "sample_rate", "cmn", "standardize", "n_iter", "seed", "max_train_frames",
                    "mfcc_params"}
        if not isinstance(config, dict) or set(config) != expected:
            raise ValueError(f"{name}: saved config has entries {sorted(config) if isinstance(config, dict) else config}"
                             f", expected {sorted(expected)}")
        try:
            ext = HACExtractor(config["ks"], config["lags"], standardize=config["standardize"],
                               n_iter=config["n_iter"], seed=config["seed"], max_train_frames=config["max_train_frames"])
            S = len(ext.streams)
            parts = [[state.get(f"{kind}.{s}") for s in range(S)] for kind in ("codebooks", "means", "scales")]
            if any(v is None for p in parts for v in p) or "n_features_in" not in state:
                raise ValueError(f"the saved state lacks entries (has {sorted(state)})")
            n_in = state["n_features_in"]
            if not isinstance(n_in, torch.Tensor) or n_in.numel() != 1 or n_in.is_floating_point():
                raise ValueError("n_features_in must be one integer")
            ext.set_state(*parts, int(n_in), name)
        except (ValueError, TypeError, RuntimeError) as e:
            raise ValueError(f"{name}: the saved codebooks do not fit: {e}") from None
        cfg = {k: config[k] for k in ("sample_rate", "cmn", "mfcc_params")}
        return cls(utterances, extractor=ext, **cfg)
