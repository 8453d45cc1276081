import os

import pytest
import torch

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
