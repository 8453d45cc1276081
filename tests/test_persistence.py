"""Saving a whole graph (graph.json + state.pt, no pickle) and loading it back: continued training
and recognition give the same numbers as the original graph; corrupt files are reported."""

import importlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

import serket_pyro as srk
from serket_pyro.modules.gmm import GMM
from serket_pyro.modules.mlda import MLDA
from serket_pyro.modules.mm import MarkovModel
from serket_pyro.persistence import load_graph, save_graph
from serket_pyro.modules.vae import VAE

N = 100
SMALL = {"latent_dim": 4, "epochs": 2, "batch_size": 50, "n_classes": 10, "gmm_itr": 5, "mlda_itr": 5}



def _recognition_by_hand(system, xt, st, ct, n_iter):
    """The tutorial graph rebuilt in recognition mode from ``system``'s state dicts (as
    ``models.*`` build it) and run on new data; returns ``(vae, gmm, mlda, mm)``."""
    obs1, obs2 = srk.Observation(xt), srk.Observation(st)
    v = VAE(4, itr=2, batch_size=50, deskew=True, mode="recog")
    g = GMM(10, itr=5, category=ct, mode="recog")
    ml = MLDA(10, [200, 200], itr=5, category=ct, mode="recog")
    mm = MarkovModel(mode="recog")
    for m, key in ((v, "vae"), (g, "gmm"), (ml, "mlda"), (mm, "mm")):
        m.load_state_dict(system[key].state_dict())
    v.connect(obs1)
    g.connect(v)
    ml.connect(obs2, g)
    mm.connect(ml)
    srk.fit(v, n_iter=n_iter, seed=3, progress=False)
    return v, g, ml, mm

def _data(data_dir):
    d = np.load(os.path.join(data_dir, "serket_tutorial.npz"))
    return (d["images"][:N].astype(np.float32) / 255.0, d["hac"][:N].astype(np.float64),
            d["category"][:N], d["images"][N:N + 40].astype(np.float32) / 255.0, d["hac"][N:N + 40].astype(np.float64),
            d["category"][N:N + 40])


def _train(tmp, data_dir):
    x, s, c, *_ = _data(data_dir)
    srk.reset_module_counter()
    build = importlib.import_module("serket_pyro.models.vae_gmm_mlda_mm").build
    system = build(x, s, c, output_root=tmp / "out_a", **SMALL)
    system.fit(n_iter=2, seed=0, progress=False)
    save_graph(tmp / "saved", system)
    return system, tmp / "saved"


@pytest.fixture(scope="module")
def _trained_once(tmp_path_factory):
    from conftest import DATA_DIR

    if not os.path.isdir(DATA_DIR):
        pytest.skip(f"shared data folder {DATA_DIR} not found (set SERKET_PYRO_DATA)")
    return _train(tmp_path_factory.mktemp("trained"), DATA_DIR)


@pytest.fixture
def trained(_trained_once, tmp_path):
    """VAE+GMM+MLDA+MM trained 2 outer iterations and saved (a private copy of the folder; the
    system must not be changed by the test)."""
    system, folder = _trained_once
    shutil.copytree(folder, tmp_path / "saved")
    return system, tmp_path / "saved"


def test_files_are_json_and_flat_tensors(trained):
    _system, folder = trained
    info = json.loads((folder / "graph.json").read_text())
    names = [e["name"] for e in info["modules"]]
    assert names == ["module000_obs", "module001_obs", "module002_vae", "module003_gmm", "module004_mlda",
                     "module005_mm"]
    mlda = info["modules"][4]
    assert mlda["class"] == "serket_pyro.modules.mlda.MLDA" and mlda["children"] == ["module001_obs", "module003_gmm"]
    assert mlda["config"]["K"] == 10 and mlda["config"]["weights"] == [200, 200]
    assert info["modules"][1]["observation"]["shape"] == [N, 2400]
    state = torch.load(folder / "state.pt", weights_only=True)  # no pickled objects
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "module003_gmm/state/means" in state and "module002_vae/state/encoder.fc1.weight" in state


def test_loaded_graph_continues_training_identically(tmp_path, data_dir):
    system, folder = _train(tmp_path, data_dir)
    x, s, c, *_ = _data(data_dir)
    loaded = load_graph(folder, {"obs1": x, "obs2": s}, category=c, output_root=tmp_path / "out_b")
    assert [m.name for m in loaded.modules.values()] == [m.name for m in system.modules.values()]
    assert loaded["mlda"].get_config() == system["mlda"].get_config()
    assert loaded["gmm"].n_updates_ == 2
    system.fit(n_iter=1, seed=7, progress=False)
    loaded.fit(n_iter=1, seed=7, progress=False)
    torch.testing.assert_close(loaded["vae"].forward_msg.loc, system["vae"].forward_msg.loc, rtol=0, atol=0)
    for k in ("gmm", "mlda", "mm"):
        torch.testing.assert_close(loaded[k].forward_msg.log_probs, system[k].forward_msg.log_probs, rtol=0, atol=0)
    assert loaded["mlda"].metrics_ == system["mlda"].metrics_
    # outputs continue in the next iteration folder
    assert (tmp_path / "out_b" / "module004_mlda" / "002" / "Pdz_learn.txt").exists()


def test_recognition_equals_modules_built_by_hand(trained, tmp_path, data_dir):
    """load_graph(mode='recog') == the tutorial way: recog-mode modules + load_state_dict."""
    system, folder = trained
    *_, xt, st, ct = _data(data_dir)
    rec = load_graph(folder, {"obs1": xt, "obs2": st}, mode="recog", category=ct, output_root=tmp_path / "r1")
    assert all(m.mode == "recog" for m in rec.modules.values() if m.learnable)
    rec.fit(n_iter=2, seed=3, progress=False)

    srk.set_output_root(tmp_path / "r2")
    v, g, ml, mm = _recognition_by_hand(system, xt, st, ct, n_iter=2)
    for a, b in ((rec["gmm"], g), (rec["mlda"], ml), (rec["mm"], mm)):
        torch.testing.assert_close(a.forward_msg.log_probs, b.forward_msg.log_probs, rtol=0, atol=0)
    # recognition leaves the learned parameters untouched
    torch.testing.assert_close(rec["gmm"].means_, system["gmm"].means_)
    for p, q in zip(rec["mlda"].phi_, system["mlda"].phi_):
        torch.testing.assert_close(p, q)
    out = tmp_path / "r1" / "module004_mlda"
    assert (out / "Pdz_recog.txt").exists() and (out / "acc_recog.txt").exists()
    assert not (out / "Pdz_learn.txt").exists()


def test_system_predict_equals_recognition_of_the_saved_graph(trained, tmp_path, data_dir):
    """System.predict_proba (no save/load by the user) == load_graph(mode='recog') + fit, and the
    trained system is left as it was."""
    system, folder = trained
    *_, xt, st, ct = _data(data_dir)
    means = system["gmm"].means_.clone()
    msg = system["mlda"].forward_msg.log_probs.clone()
    p = system.predict_proba({"obs1": xt, "obs2": st}, n_iter=2, seed=3)
    rec = load_graph(folder, {"obs1": xt, "obs2": st}, mode="recog", output_root=tmp_path / "r")
    rec.fit(n_iter=2, seed=3, progress=False)
    np.testing.assert_array_equal(p, np.loadtxt(tmp_path / "r" / system["mlda"].name / "Pdz_recog.txt"))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(system.predict({"obs1": xt, "obs2": st}, n_iter=2, seed=3), p.argmax(1))
    torch.testing.assert_close(system["gmm"].means_, means, rtol=0, atol=0)
    torch.testing.assert_close(system["mlda"].forward_msg.log_probs, msg, rtol=0, atol=0)
    assert all(m.mode == "learn" for m in system.modules.values() if m.learnable)
    # labels score the copy; the speech may be missing; files go where asked
    p2 = system.predict_proba({"obs1": xt}, category=ct, exclude=["mm"], output_root=tmp_path / "kept")
    assert p2.shape == p.shape and "accuracy" in system.recognition_["mlda"].metrics_
    assert (tmp_path / "kept" / system["mlda"].name / "Pdz_recog.txt").exists()
    with pytest.raises(ValueError, match="unknown observation"):
        system.predict_proba({"images": xt})


def test_missing_speech_at_recognition(trained, tmp_path, data_dir):
    """MLDA's speech observation left out: zero counts = missing modality, recognised from images."""
    _system, folder = trained
    *_, xt, st, ct = _data(data_dir)
    rec = load_graph(folder, {"obs1": xt}, mode="recog", category=ct, output_root=tmp_path / "r")
    assert float(rec["obs2"].data.abs().sum()) == 0.0 and tuple(rec["obs2"].data.shape) == (40, 2400)
    rec.fit(n_iter=1, seed=0, progress=False)
    p = np.loadtxt(tmp_path / "r" / "module004_mlda" / "Pdz_recog.txt")
    assert p.shape == (40, 10) and np.allclose(p.sum(1), 1) and np.isfinite(p).all()
    # the speech predicted from the images alone is a proper distribution over the 2400 bins
    pred = rec["mlda"].predictions_[0]
    assert pred.shape == (40, 2400) and torch.allclose(pred.sum(1), torch.ones(40, dtype=pred.dtype))
    with pytest.raises(ValueError, match="module000_obs is required"):
        load_graph(folder, {"obs2": st}, mode="recog")


def test_bad_observations(trained):
    _, folder = trained
    with pytest.raises(ValueError, match="unknown observation"):
        load_graph(folder, {"images": np.zeros((5, 784))})
    with pytest.raises(ValueError, match="shape"):
        load_graph(folder, {"obs1": np.zeros((5, 10)), "obs2": np.zeros((5, 2400))}, mode="recog")
    with pytest.raises(ValueError, match="different numbers"):
        load_graph(folder, {"obs1": np.zeros((5, 784)), "obs2": np.zeros((6, 2400))})


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_corrupt_state_is_reported(trained, damage):
    _, folder = trained
    path = folder / "state.pt"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        b = bytearray(data)
        b[len(b) // 2] ^= 0xFF
        path.write_bytes(bytes(b))
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError, match="state.pt is corrupt or truncated"):
        load_graph(folder, mode="recog")


def test_corrupt_graph_json_is_reported(trained):
    _, folder = trained
    path = folder / "graph.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="graph.json is corrupt or truncated"):
        load_graph(folder)
    path.write_text(json.dumps({"format": "serket_pyro.graph", "version": 1, "modules": [{"name": 1}]}))
    with pytest.raises(ValueError, match="graph.json is corrupt"):
        load_graph(folder)
    os.remove(path)
    with pytest.raises(ValueError, match="graph.json not found"):
        load_graph(folder)


def test_pickle_payload_is_refused(trained):
    """A state.pt holding a pickled object (checksum updated to match) is refused, not executed."""
    _, folder = trained

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    import io
    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf)
    data = buf.getvalue()
    (folder / "state.pt").write_bytes(data)
    info = json.loads((folder / "graph.json").read_text())
    import hashlib
    info["state_sha256"], info["state_bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (folder / "graph.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="state.pt holds pickled Python objects"):
        load_graph(folder)


def test_untrusted_class_is_refused(trained):
    _, folder = trained
    info = json.loads((folder / "graph.json").read_text())
    info["modules"][5]["class"] = "os.system"
    (folder / "graph.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="outside the allowed packages"):
        load_graph(folder)


def test_save_plain_module_graph(tmp_path):
    """Without a System: a list of modules; keys are the module names."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (30, 2)), rng.normal(3, 1, (30, 2))])
    obs = srk.Observation(x)
    g = GMM(2, itr=5, output_root=tmp_path)
    g.connect(obs)
    srk.fit(g, n_iter=1, seed=0, progress=False)
    save_graph(tmp_path / "g", g)
    rec = load_graph(tmp_path / "g", [x[::-1].copy()], mode="recog", output_root=tmp_path / "r")
    assert set(rec.modules) == {"module000_obs", "module001_gmm"} and rec.result == "module001_gmm"
    rec.fit(n_iter=1, progress=False)
    p = rec.result_module.forward_msg.probs.numpy()
    q = g.forward_msg.probs.numpy()[::-1]
    np.testing.assert_allclose(p, q, atol=1e-12)


def test_exclude_top_module(trained, tmp_path, data_dir):
    """Points in an unrelated order: leave the Markov model out; MLDA then has no parent."""
    _, folder = trained
    *_, xt, st, ct = _data(data_dir)
    rec = load_graph(folder, {"obs1": xt, "obs2": st}, mode="recog", category=ct, output_root=tmp_path / "r",
                     exclude=["mm"])
    assert "mm" not in rec.modules and rec["mlda"].parents == [] and rec.result == "mlda"
    rec.fit(n_iter=1, seed=0, progress=False)
    assert not (tmp_path / "r" / "module005_mm").exists()
    with pytest.raises(ValueError, match="reads them"):
        load_graph(folder, {"obs1": xt, "obs2": st}, mode="recog", exclude=["gmm"])
    with pytest.raises(ValueError, match="unknown module"):
        load_graph(folder, {"obs1": xt, "obs2": st}, mode="recog", exclude=["hmm"])


def test_zero_counts_are_a_missing_modality(tmp_path):
    """What 'missing' means for MLDA: with a modality all zero, the forward message (topic
    proportions folded in from the document's own tokens) equals that of an MLDA that never had
    that modality.  (The sampled theta_ agrees in distribution only: the random streams differ.)"""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, (30, 8)).astype(float)
    b = rng.integers(0, 4, (30, 5)).astype(float)
    m = MLDA(3, [20, 20], itr=20, output_root=tmp_path)
    m.connect(srk.Observation(a), srk.Observation(b))
    srk.fit(m, n_iter=1, seed=0, progress=False)
    state = m.state_dict()
    both = MLDA(3, [20, 20], itr=5, mode="recog", output_root=tmp_path)
    both.load_state_dict(state)
    both.connect(srk.Observation(np.zeros((30, 8))), srk.Observation(b))
    one = MLDA(3, [20], itr=5, mode="recog", output_root=tmp_path)
    one.load_state_dict({"theta": state["theta"], "phi.0": state["phi.1"]})
    one.connect(srk.Observation(b))
    srk.fit(both, n_iter=1, seed=1, progress=False)
    srk.fit(one, n_iter=1, seed=1, progress=False)
    torch.testing.assert_close(both.forward_msg.log_probs, one.forward_msg.log_probs, rtol=0, atol=1e-12)


def test_recognition_on_new_data_of_the_training_size(trained, tmp_path, data_dir):
    """Recognition of N new points when the graph was trained on N points: the saved messages
    belong to the training points and must not be restored (a size check alone cannot tell), so the
    result equals recognition-mode modules built by hand, which start without messages."""
    system, folder = trained
    d = np.load(os.path.join(data_dir, "serket_tutorial.npz"))
    new = slice(2 * N, 3 * N)  # N points, none of them in the training set
    xt, st, ct = d["images"][new].astype(np.float32) / 255.0, d["hac"][new].astype(np.float64), d["category"][new]
    rec = load_graph(folder, {"obs1": xt, "obs2": st}, mode="recog", category=ct, output_root=tmp_path / "r1")
    assert all(m.n_updates_ == 0 for m in rec.modules.values() if m.learnable)
    assert rec["gmm"].get_backward_msg() is None and rec["mlda"].get_backward_msg() is None
    rec.fit(n_iter=1, seed=3, progress=False)

    srk.set_output_root(tmp_path / "r2")
    v, g, ml, mm = _recognition_by_hand(system, xt, st, ct, n_iter=1)
    for a, b in ((rec["gmm"], g), (rec["mlda"], ml), (rec["mm"], mm)):
        torch.testing.assert_close(a.forward_msg.log_probs, b.forward_msg.log_probs, rtol=0, atol=0)
    # the forward messages leave the parents' messages out: what a stale message would change are
    # the classifications and the backward messages, which include them
    torch.testing.assert_close(rec["mlda"].theta_, ml.theta_, rtol=0, atol=0)
    torch.testing.assert_close(v.children[0].get_backward_msg().value, rec["obs1"].get_backward_msg().value, rtol=0, atol=0)
    torch.testing.assert_close(v.get_backward_msg().loc, rec["vae"].get_backward_msg().loc, rtol=0, atol=0)
    for a, b in ((rec["gmm"], g), (rec["mlda"], ml)):
        np.testing.assert_array_equal(np.loadtxt(os.path.join(a.output_dir, "Pdz_recog.txt")),
                                      np.loadtxt(os.path.join(b.output_dir, "Pdz_recog.txt")))
    assert (tmp_path / "r1" / "module004_mlda" / "000" / "Pdz_recog.txt").exists()
