import os

import pytest
import torch

import serket_pyro as srk
from serket_pyro.messages import ClassProbs, Message

torch.set_num_threads(1)

DATA_DIR = os.environ.get(
    "SERKET_PYRO_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
)


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path, monkeypatch):
    """Every test writes under its own tmp folder and starts module numbering at 0."""
    import serket_pyro as srk

    monkeypatch.chdir(tmp_path)
    srk.set_output_root(None)
    srk.reset_module_counter()
    yield
    srk.set_output_root(None)


@pytest.fixture
def data_dir():
    if not os.path.isdir(DATA_DIR):
        pytest.skip(f"shared data folder {DATA_DIR} not found (set SERKET_PYRO_DATA)")
    return DATA_DIR



class Parent(srk.Module):
    """A stand-in parent for the module tests: at :meth:`update` it sends ``down`` (a message, or
    ``(N, K)`` class probabilities) to its one child; without ``down`` it sends nothing (a test
    then sends with ``send_backward_msgs``)."""

    def __init__(self, down=None):
        super().__init__("parent")
        self.down = down if down is None or isinstance(down, Message) else ClassProbs.from_probs(down)
        self.msg = self.down

    def update(self):
        self.send_backward_msgs([self.down])
        self.n_updates_ += 1


@pytest.fixture
def make_parent():
    """``make_parent(down=None)``: a :class:`Parent`."""
    return Parent
