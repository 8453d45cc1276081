"""The subpackage layout and the names of the flat layout it replaced."""

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest

import serket_pyro as srk
from serket_pyro import MOVED_MODULES


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_flat_layout_names_are_the_moved_modules(old):
    new = importlib.import_module(f"serket_pyro.{MOVED_MODULES[old]}")
    assert importlib.import_module(f"serket_pyro.{old}") is new
    assert getattr(srk, old) is new
    assert new.__spec__.name == f"serket_pyro.{MOVED_MODULES[old]}"  # the alias leaves its own spec


def test_tutorial_imports_and_reexports():
    from serket_pyro import gmm, mlda, mm, vae
    from serket_pyro.modules import GMM, MLDA, VAE, MarkovModel

    assert (vae.VAE, gmm.GMM, mlda.MLDA, mm.MarkovModel) == (VAE, GMM, MLDA, MarkovModel)
    assert (srk.VAE, srk.GMM, srk.MLDA, srk.MarkovModel) == (VAE, GMM, MLDA, MarkovModel)
    assert srk.System is importlib.import_module("serket_pyro.system").System
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        srk.nothing  # noqa: B018


def test_import_is_lazy():
    """`import serket_pyro` (and so `serket-pyro --help`) does not import torch or pyro."""
    code = "import sys, serket_pyro; print(sorted(m for m in ('torch', 'pyro') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_graph_saved_with_flat_class_paths_loads(tmp_path):
    srk.reset_module_counter()
    x = np.random.default_rng(0).normal(size=(30, 2))
    obs = srk.Observation(x)
    g = srk.GMM(2, itr=2, output_root=tmp_path / "out")
    g.connect(obs)
    g.update()
    srk.save_graph(tmp_path / "graph", g)
    info = json.loads((tmp_path / "graph" / "graph.json").read_text())
    assert [e["class"] for e in info["modules"]] == ["serket_pyro.module.Observation",
                                                      "serket_pyro.modules.gmm.GMM"]
    info["modules"][1]["class"] = "serket_pyro.gmm.GMM"  # as version 0.1 wrote it
    (tmp_path / "graph" / "graph.json").write_text(json.dumps(info))
    loaded = srk.load_graph(tmp_path / "graph", {obs.name: x})
    gm = loaded[g.name] if isinstance(loaded, dict) else loaded.modules[g.name]
    assert type(gm) is srk.GMM
    np.testing.assert_allclose(gm.means_, g.means_)
