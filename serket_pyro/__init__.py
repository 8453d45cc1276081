"""serket-pyro: build cognitive models by connecting small probabilistic modules (Serket) in Pyro.

Nakamura, Nagai, Taniguchi, "SERKET: An Architecture for Connecting Stochastic Models to Realize a
Large-Scale Cognitive Model", Frontiers in Neurorobotics 12:25 (2018).

Layout: the framework core sits at the top (:mod:`.module`, :mod:`.messages`, :mod:`.driver`,
:mod:`.system`, :mod:`.persistence`, :mod:`.output`); the families live in subpackages:
:mod:`.modules` (VAE, GMM, MLDA, Markov model), :mod:`.ops` (numerical kernels), :mod:`.joint`,
:mod:`.datasets`, :mod:`.features` and :mod:`.app` (command line, runs, plots).

The tutorials' code runs with ``import serket_pyro as srk`` and
``from serket_pyro import vae, gmm, mlda, mm`` (and the original's ``nn``, ``torch_nn``,
``torch_vae``): the modules' files are reachable under their
names of the flat layout (``serket_pyro.gmm`` is ``serket_pyro.modules.gmm``).  Names are loaded
on first use, so ``import serket_pyro`` alone does not import torch.  Progress and notes go to the
``serket_pyro`` :mod:`logging` logger (silent until the application configures logging).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import sys

__version__ = "0.1.0"

# the library logs on "serket_pyro" and its children and prints nothing; an application shows the
# messages with logging.basicConfig(level=logging.INFO) (the serket-pyro command does, see -q/-v)
logging.getLogger(__name__).addHandler(logging.NullHandler())

#: files of the flat layout (up to 0.1), and the original Serket's module names (``hac``, ``TtoT``,
#: ``utils`` for ``serket.utils``), and where they live now; saved graphs name classes by these
#: paths, so :mod:`.persistence` reads its alias table from here
MOVED_MODULES = {
    "vae": "modules.vae",
    "gmm": "modules.gmm",
    "mlda": "modules.mlda",
    "mm": "modules.mm",
    "hac": "modules.hac",
    "TtoT": "modules.ttot",
    "utils": "modules.utils",
    # the original's other module packages (``import nn``, ``import torch_nn``, ``import torch_vae``)
    "nn": "modules.neural",
    "torch_nn": "modules.neural",
    "torch_vae": "modules.torch_vae",
    "forward_backward": "ops.forward_backward",
    "neighbour_embedding": "joint.neighbour_embedding",
    "paired_data": "datasets.paired_data",
    "deskew": "features.deskew",
    "cli": "app.cli",
    "runner": "app.runner",
    "plots": "app.plots",
}

#: public name -> the module that defines it
_EXPORTS = {
    "fit": "driver",
    "save_checkpoint": "driver",
    "load_checkpoint": "driver",
    "latest_checkpoint": "driver",
    "Message": "messages",
    "ClassProbs": "messages",
    "GaussianMessage": "messages",
    "PointMessage": "messages",
    "Module": "module",
    "Observation": "module",
    "connected_modules": "module",
    "reset_module_counter": "module",
    "update_order": "module",
    "get_output_root": "output",
    "set_output_root": "output",
    "load_graph": "persistence",
    "save_graph": "persistence",
    "set_seed": "seed",
    "System": "system",
    "VAE": "modules.vae",
    "GMM": "modules.gmm",
    "MLDA": "modules.mlda",
    "MarkovModel": "modules.mm",
    "HACFeatureExtractor": "modules.hac",
    "NN": "modules.neural",
    "TorchNN": "modules.neural",
    "TorchVAE": "modules.torch_vae",
    "joint_model": "joint",
    "joint_program": "joint",
    "JointProgram": "joint",
}

__all__ = sorted(_EXPORTS)


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import ``serket_pyro.<old name>`` as the module it moved to (one module object, two names,
    so that patching either patches both)."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, old = fullname.rpartition(".")
        if prefix != __name__ or old not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(f"{__name__}.{MOVED_MODULES[spec.name.rpartition('.')[2]]}")
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self._own_spec  # the import system set the alias's; the module keeps its own


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif name in MOVED_MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(MOVED_MODULES))
