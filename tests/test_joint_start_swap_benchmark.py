"""benchmarks/joint_start_swap.py: a saved start is the start the joint epochs run from (the
swap between the old JointModel and the compiled program is in the README)."""

import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import joint_start_swap as swap  # noqa: E402


def run(*argv):
    return swap.main(swap.parser().parse_args([str(a) for a in argv]))


def test_a_saved_start_is_restored_exactly(tmp_path, data_dir):
    tiny = ["--n-points", 300, "--data-dir", data_dir]
    pre = run("pretrain", *tiny, "--pretrain-epochs", 1, "--seed", 3, "--out", tmp_path / "s.pt")
    st = torch.load(tmp_path / "s.pt", weights_only=True)
    assert st["w"].sum().item() == pytest.approx(1.0) and (st["s"] > 0).all() and st["m"].shape == (10, 10)
    rec = run("joint", *tiny, "--epochs", 2, "--start", tmp_path / "s.pt", "--json", tmp_path / "j.json")
    # the joint run classifies exactly as the pretraining left it before its first step
    assert rec["start_accuracy"] == pre["start_accuracy"]
    assert len(rec["accuracy_history"]) == 2 and len(rec["loss_history"]) == 2
    with open(tmp_path / "j.json") as f:
        assert json.load(f)["accuracy_history"] == rec["accuracy_history"]
    # and the parameters read back are the saved ones
    jm = swap.build(*_data(data_dir), 0, str(tmp_path))
    swap.set_start(jm, st)
    back = swap.get_start(jm)
    for k in ("w", "m", "s"):
        assert torch.allclose(back[k], st[k], rtol=1e-9, atol=1e-12), k
    for k, v in st["enc"].items():
        assert torch.equal(back["enc"][k], v)
    # --init-classes: the saved networks, the classes started anew (the GMM start on their latents)
    anew = run("joint", *tiny, "--epochs", 1, "--start", tmp_path / "s.pt", "--init-classes")
    assert anew["init_classes"] and 0 < anew["start_accuracy"] <= 1 and len(anew["accuracy_history"]) == 1
    with pytest.raises(SystemExit, match="joint takes --start"):
        run("joint", *tiny)


def _data(data_dir):
    import numpy as np
    from serket_pyro.datasets import load_mnist
    tr = load_mnist("train", root=data_dir)
    return np.asarray(tr.images[:300]), np.asarray(tr.labels[:300])
