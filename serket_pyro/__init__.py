"""serket-pyro: build cognitive models by connecting small probabilistic modules (Serket) in Pyro.

Nakamura, Nagai, Taniguchi, "SERKET: An Architecture for Connecting Stochastic Models to Realize a
Large-Scale Cognitive Model", Frontiers in Neurorobotics 12:25 (2018).

The tutorials' code runs with ``import serket_pyro as srk`` and
``from serket_pyro import vae, gmm, mlda, mm``.
"""

from .driver import fit, latest_checkpoint, load_checkpoint, save_checkpoint
from .messages import ClassProbs, GaussianMessage, Message, PointMessage
from .module import Module, Observation, connected_modules, reset_module_counter, update_order
from .output import get_output_root, set_output_root
from .persistence import load_graph, save_graph
from .seed import set_seed

__version__ = "0.1.0"

__all__ = [
    "Module",
    "Observation",
    "Message",
    "ClassProbs",
    "GaussianMessage",
    "PointMessage",
    "fit",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "set_seed",
    "save_graph",
    "load_graph",
    "set_output_root",
    "get_output_root",
    "reset_module_counter",
    "connected_modules",
    "update_order",
]
