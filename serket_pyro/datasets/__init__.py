"""Loaders for the real data sets used by the tutorials, tests and benchmarks.

One module per data set holds everything about it (upstream sources, the arrays of its ``.npz``
file, their SHA-256, the record class, the converter from the upstream format and the
``load_*`` function), as scikit-learn's ``sklearn/datasets/_covtype.py``:

=============================  ============================  ==============================================
module                         file                          loader
=============================  ============================  ==============================================
:mod:`.tutorial`               ``serket_tutorial.npz``       :func:`load_tutorial`
:mod:`.tutorial_speech`        tutorial and SAD ``.npz``     :func:`load_tutorial_speech` (raw MFCC)
:mod:`.hmm_toy`                ``serket_hmm_toy.npz``        :func:`load_hmm_toy`
:mod:`.objects`                ``serket_objects.npz``        :func:`load_objects`
:mod:`.mmlda_chain`            ``serket_mmlda_chain.npz``    :func:`load_mmlda_chain`
:mod:`.spoken_arabic_digit`    ``spoken_arabic_digit.npz``   :func:`load_spoken_arabic_digit`
:mod:`.fsdd`                   ``fsdd.npz``                  :func:`load_fsdd`
:mod:`.mnist`                  ``mnist.npz`` (+ subset)      :func:`load_mnist`, :func:`load_mnist_subset`
=============================  ============================  ==============================================

The plumbing they share is in :mod:`._base`.  A file is looked for, in this order, in

1. the directory given as ``root=`` to the loader,
2. the directory named by the ``SERKET_PYRO_DATA`` environment variable,
3. the user cache folder, ``$XDG_CACHE_HOME/serket_pyro`` (or ``~/.cache/serket_pyro`` when
   ``XDG_CACHE_HOME`` is unset).

A file that is found is checked cheaply (array names, dtypes and shapes) and a corrupt or
truncated file raises :class:`DatasetCorruptError` naming it.  When the file is found nowhere and
``download=True`` the public original is fetched with :mod:`urllib` (with a ``tqdm`` progress
bar), converted to the same ``.npz`` layout, checked against the SHA-256 digest of the converted
arrays (:data:`ARRAY_SHA256`, see :func:`array_digest`), and only then written, atomically, into
the cache folder.  A digest mismatch raises :class:`DatasetChecksumError` and caches nothing.
Without network access a :class:`DatasetNotFoundError` says which file is missing, where it was
looked for and how to provide it.  The converters (``tutorial_from_zip``, ``read_idx``, ...) are
public so that they can be tested on small hand-made inputs.

Please cite MNIST (LeCun, Cortes, Burges), UCI Spoken Arabic Digit (Hammami and Bedda 2008), the
Free Spoken Digit Dataset (Jakobovski et al.) and Serket (Nakamura, Nagai, Taniguchi, Frontiers in
Neurorobotics 12:25, 2018) wherever results on these data are reported.
"""

from __future__ import annotations

from ._base import (
    ARRAY_SHA256,
    ENV_VAR,
    DatasetChecksumError,
    DatasetCorruptError,
    DatasetError,
    DatasetNotFoundError,
    array_digest,
    cache_dir,
    find_data_file,
    search_locations,
    split_by_lengths,
)
from .fsdd import FSDDData, fsdd_from_wavs, fsdd_from_zip, load_fsdd, read_wav_int16
from .hmm_toy import HMMToyData, hmm_toy_from_texts, load_hmm_toy
from .mmlda_chain import MMLDAChainData, load_mmlda_chain, mmlda_chain_from_texts
from .mnist import MNISTData, MNISTSubset, load_mnist, load_mnist_subset, mnist_from_idx, read_idx
from .objects import ObjectsData, load_objects, objects_from_texts
from .spoken_arabic_digit import (
    SpokenArabicDigitData,
    arabic_digit_from_texts,
    load_spoken_arabic_digit,
    parse_arabic_digit_blocks,
)
from .tutorial import TutorialData, load_tutorial, tutorial_from_texts, tutorial_from_zip
from .tutorial_speech import TutorialSpeech, load_tutorial_speech, tutorial_utterance_rows

__all__ = [
    "ENV_VAR",
    "ARRAY_SHA256",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetCorruptError",
    "DatasetChecksumError",
    "TutorialData",
    "HMMToyData",
    "ObjectsData",
    "MMLDAChainData",
    "SpokenArabicDigitData",
    "FSDDData",
    "MNISTData",
    "MNISTSubset",
    "load_tutorial",
    "load_tutorial_speech",
    "tutorial_utterance_rows",
    "TutorialSpeech",
    "load_hmm_toy",
    "load_objects",
    "load_mmlda_chain",
    "load_spoken_arabic_digit",
    "load_fsdd",
    "load_mnist",
    "load_mnist_subset",
    "split_by_lengths",
    "cache_dir",
    "search_locations",
    "find_data_file",
    "array_digest",
    "tutorial_from_texts",
    "tutorial_from_zip",
    "hmm_toy_from_texts",
    "objects_from_texts",
    "mmlda_chain_from_texts",
    "parse_arabic_digit_blocks",
    "arabic_digit_from_texts",
    "read_idx",
    "mnist_from_idx",
    "read_wav_int16",
    "fsdd_from_wavs",
    "fsdd_from_zip",
]
