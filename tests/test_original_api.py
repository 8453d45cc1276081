"""Scripts written for the original Serket: its constructor signatures (2018 positional orders, the
2021-2023 keywords), its recognition workflow (model files, ``load_dir``, ``mode="recog"``,
``update(load_trained_model=...)``) in a fresh process, ``Observation(None)``."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

import serket_pyro as srk
from serket_pyro import gmm, mlda, mm, vae
from serket_pyro.original_api import OriginalArgumentWarning


# ----------------------------------------------------------------------------- signatures
def test_gmm_original_positional_order_and_keywords():
    cat = np.array([0, 1, 1, 0])
    g = gmm.GMM(5, 30, "mygmm", cat)  # GMM(K, itr, name, category)
    assert (g.K, g.itr, g.name) == (5, 30, "module000_mygmm") and g.category.tolist() == [0, 1, 1, 0]
    g = gmm.GMM(5, 30, "mygmm", None, "recog")  # the 2019 form: mode in fifth place
    assert g.mode == "recog" and g.category is None
    g = gmm.GMM(4, 7, category=cat, name="g")  # keywords
    assert (g.K, g.itr, g.name, g.mode) == (4, 7, "module002_g", "learn")
    g = gmm.GMM(4, 7, cat)  # our own order still works
    assert g.category.tolist() == [0, 1, 1, 0] and g.name.endswith("_gmm")
    assert g.get_config() == gmm.GMM(4, 7).get_config()  # the name and labels stay out of the config


def test_positional_name_never_becomes_category():
    for make in (lambda: gmm.GMM(3, 10, "speech"), lambda: mlda.MLDA(3, None, 10, "speech")):
        m = make()
        assert m.name.endswith("_speech") and m.category is None


def test_mlda_original_positional_order():
    m = mlda.MLDA(10, [200, 200], 40, "ml", np.arange(3))  # MLDA(K, weights, itr, name, category)
    assert (m.K, m.weights, m.itr, m.name) == (10, [200.0, 200.0], 40, "module000_ml")
    assert m.category.tolist() == [0, 1, 2]
    m = mlda.MLDA(10, [1, 2], 40, "ml", None, "recog")
    assert m.mode == "recog"


def test_markov_model_original_order_and_num_samp():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = mm.MarkovModel(100, "chain", "recog")  # MarkovModel(num_samp, name, mode)
        assert (m.num_samp, m.name, m.mode) == (100, "module000_chain", "recog")
        m = mm.MarkovModel(num_samp=7, method="original")  # num_samp is used by the original's method
        assert m.num_samp == 7
    with pytest.warns(OriginalArgumentWarning, match=r"num_samp=7 is used only by method='original'"):
        mm.MarkovModel(7)  # never silently ignored


@pytest.mark.parametrize("args,kwargs,expected", [
    # 2021-2023: VAE(latent_dim, epoch, name, batch_size, KLD_weight, RE, load_dir, loss_step)
    ((18,), {"epoch": 200, "batch_size": 500}, {"itr": 200, "batch_size": 500, "name": "module000_vae"}),
    ((18, 30, "v", None, 0.5, "MSE"), {}, {"itr": 30, "batch_size": None, "kl_weight": 0.5,
                                          "likelihood": "gaussian", "name": "module000_v"}),
    ((18,), {"epoch": 3, "KLD_weight": 2, "RE": "BCE", "loss_step": 5, "name": "w"},
     {"itr": 3, "kl_weight": 2.0, "likelihood": "bernoulli", "loss_step": 5, "name": "module000_w"}),
    # 2019-2021: VAE(latent_dim, itr, name, batch_size, KL_param, RE, mode)
    ((10, 40, "vae", 100, 3, "BCE", "recog"), {}, {"itr": 40, "batch_size": 100, "kl_weight": 3.0, "mode": "recog"}),
    ((10,), {"itr": 40, "KL_param": 0.25}, {"itr": 40, "kl_weight": 0.25}),
    # 2018: VAE(latent_dim, weight_stddev, itr, name, hidden_encoder_dim, hidden_decoder_dim, batch_size, KL_param)
    ((8, 0.1, 50, "old", 64, 64, 32, 2), {}, {"itr": 50, "hidden": 64, "batch_size": 32, "kl_weight": 2.0,
                                             "name": "module000_old", "init_scale": 0.1}),
    ((8,), {"hidden_encoder_dim": 32, "hidden_decoder_dim": 32}, {"hidden": 32}),
    ((8,), {"hidden_decoder_dim": 16}, {"hidden": 16}),
    # ours
    ((6, 9, 10), {"hidden": 8, "kl_weight": 0.5}, {"itr": 9, "batch_size": 10, "hidden": 8, "kl_weight": 0.5}),
])
def test_vae_original_signatures_map(args, kwargs, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every argument is used: no warning
        v = vae.VAE(*args, **kwargs)
    for k, want in expected.items():
        assert getattr(v, k) == want, (k, getattr(v, k), want)
    assert "name" not in v.get_config() and type(v)(**v.get_config()).get_config() == v.get_config()


def test_vae_weight_stddev_starts_the_networks_from_a_truncated_normal(tmp_path):
    """The 2018 VAE's weight_stddev: every built-in weight from Normal(0, s) cut at 2 s, zero biases."""
    v = vae.VAE(8, 0.03, 50)  # the 2018 order without a name
    assert (v.itr, v.init_scale) == (50, 0.03)
    torch.manual_seed(0)
    v._build(400)
    weights = [m.weight for net in (v.encoder_, v.decoder_) for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(weights) == 5
    w = torch.cat([p.detach().reshape(-1) for p in weights])
    assert float(w.abs().max()) <= 0.06 + 1e-7
    # the standard deviation of N(0, s) truncated at +-2 s is 0.880 s
    assert abs(float(w.std()) - 0.880 * 0.03) < 0.002, float(w.std())
    assert all(float(m.bias.detach().abs().max()) == 0.0 for net in (v.encoder_, v.decoder_) for m in net.modules()
               if isinstance(m, torch.nn.Linear))
    default = vae.VAE(8, 2, 50)
    torch.manual_seed(0)
    default._build(400)
    assert float(default.encoder_.fc1.bias.detach().abs().max()) > 0  # PyTorch's own start otherwise


@pytest.mark.parametrize("make,match", [
    (lambda: vae.VAE(4, RE="L1"), r"VAE\(\): RE must be 'BCE' or 'MSE'.*likelihood="),
    (lambda: vae.VAE(4, hidden_encoder_dim=8, hidden_decoder_dim=16),
     r"hidden_encoder_dim=8 and hidden_decoder_dim=16 differ.*write hidden=8"),
    (lambda: vae.VAE(4, epoch=3, itr=4), r"epoch= \(the original's name\) and itr= both given: write only itr="),
    (lambda: vae.VAE(4, KL_param=1, KLD_weight=2), r"KL_param= and KLD_weight= both set kl_weight"),
    (lambda: vae.VAE(4, load_dir="x", mode="learn"), r"load_dir='x' loads a trained model.*mode='learn'"),
    (lambda: gmm.GMM(3, 10, "g", None, "no_such_folder/004"), r"module\d+_g: no model in 'no_such_folder/004'"),
    (lambda: gmm.GMM(3, 10, "g", None, "recog", 5), r"GMM\(\): the original's signature .* takes 5 positional"),
    (lambda: gmm.GMM(3, 10, "g", category=None, name="h"), r"name given twice"),
    (lambda: mlda.MLDA(3, epoch=4), r"MLDA\(\): unknown argument\(s\) epoch"),
])
def test_unsupported_original_arguments_raise_naming_them(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ----------------------------------------------------------------------------- Observation(None)
def _counts(n, seed=0):
    rng = np.random.default_rng(seed)
    z = np.arange(n) % 3
    words = np.zeros((n, 9))
    for i, k in enumerate(z):
        p = np.where(np.arange(9) // 3 == k, 0.3, 0.05)
        words[i] = rng.multinomial(30, p / p.sum())
    return z, words


def test_observation_none_is_a_missing_modality_for_mlda(tmp_path):
    srk.set_output_root(tmp_path)
    z, words = _counts(60)
    srk.set_seed(0)
    full = mlda.MLDA(3, itr=30)
    full.connect(srk.Observation(words), srk.Observation(words[:, ::-1].copy()))
    full.update()
    # recognition from the first modality only: Observation(None) for the second
    rec = mlda.MLDA(3, itr=30, mode="recog")
    rec.load_state_dict(full.state_dict())
    rec.connect(srk.Observation(words), srk.Observation(None))
    srk.set_seed(1)
    rec.update()
    # the same as all-zero counts of the learned width (MLDA's missing modality)
    ref = mlda.MLDA(3, itr=30, mode="recog")
    ref.load_state_dict(full.state_dict())
    ref.connect(srk.Observation(words), srk.Observation(np.zeros((60, 9))))
    srk.set_seed(1)
    ref.update()
    assert torch.equal(rec.forward_msg.log_probs, ref.forward_msg.log_probs)
    # the original's scripts declare Observation(None) and set the data later
    later = srk.Observation(None)
    later.set_forward_msg(words[:, ::-1].copy())
    assert not later.missing and later.n_points == 60
    with pytest.raises(ValueError, match=r"module\d+_obs: data contain 1 NaN"):
        later.set_forward_msg(np.full((2, 2), 1.0) + np.diag([np.nan, 0]))
    # a graph with Observation(None) saves and loads (the missing modality stays missing)
    srk.save_graph(tmp_path / "saved", rec)
    again = srk.load_graph(tmp_path / "saved", {rec.children[0].name: words}, mode="recog")
    m2 = again.modules[rec.name]
    assert m2.children[1].missing
    srk.set_seed(1)
    m2.update()
    assert torch.equal(m2.forward_msg.log_probs, ref.forward_msg.log_probs)
    # a module that cannot read a missing modality says so
    g = gmm.GMM(3)
    g.connect(srk.Observation(None))
    with pytest.raises(ValueError, match=r"module\d+_gmm: module\d+_obs holds no data \(Observation\(None\)\)"):
        g.update()


# ----------------------------------------------------------------------------- model files
def _learn(folder):
    srk.set_output_root(folder)
    z, words = _counts(60)
    srk.set_seed(0)
    x = np.clip(np.eye(3)[z].repeat(4, axis=1) * 0.8 + 0.1, 0, 1)
    obs1, obs2 = srk.Observation(x), srk.Observation(words)
    g = gmm.GMM(3, 20, "gmm", z)
    m = mlda.MLDA(3, [50, 50], 20, "mlda", z)
    m.connect(obs2, g.connect(obs1))
    for _ in range(2):
        g.update()
        m.update()
    return g, m


def test_every_learning_update_writes_a_model_file(tmp_path):
    g, m = _learn(tmp_path)
    for mod in (g, m):
        for sub in ("000", "001", ""):
            d = tmp_path / mod.name / sub
            info = json.loads((d / "model.json").read_text())
            assert info["class"].endswith(type(mod).__name__) and info["config"]["K"] == 3
            assert (d / "model.pt").stat().st_size == info["state_bytes"]
    # the original's name of MLDA's classes
    d = tmp_path / m.name / "001"
    assert np.array_equal(np.loadtxt(d / "categories_learn.txt"), np.loadtxt(d / "class_learn.txt"))


def test_vae_predict_decodes_the_parents_message(tmp_path):
    """The original TorchVAE's predict(): x_hat = decoder(the parent's prior mean), sent down and saved."""
    srk.set_output_root(tmp_path)
    srk.set_seed(0)
    rng = np.random.default_rng(0)
    x = (rng.random((60, 20)) < np.repeat(rng.random((3, 20)), 20, axis=0)).astype(float)
    obs = srk.Observation(x)
    v = vae.VAE(2, itr=3, batch_size=30, hidden=8)
    g = gmm.GMM(3, itr=5)
    v.connect(obs)
    g.connect(v)
    with pytest.raises(ValueError, match=r"predict\(\) needs trained networks"):
        v.predict()
    v.update()
    with pytest.raises(ValueError, match=r"no parent has sent one"):
        v.predict()
    g.update()
    msg = v.get_backward_msg()
    x_hat = v.predict()
    want = torch.sigmoid(v.decoder_(msg.loc.float())).double().detach().numpy()
    assert x_hat.shape == (60, 20) and np.allclose(x_hat, want, atol=1e-6)
    assert np.allclose(np.asarray(obs.get_backward_msg()), x_hat)
    saved = np.loadtxt(tmp_path / v.name / "predict" / "x_hat_predict.txt")
    assert np.allclose(saved, x_hat, atol=1e-4) and v.n_updates_ == 1
    # in a fresh module: the model file of a learning update, the parent's message set by hand
    w = vae.VAE(2, itr=3, batch_size=30, hidden=8, load_dir=tmp_path / v.name / "000")
    w.connect(srk.Observation(x))
    w.set_backward_msg(msg)  # the original's way for a module without a parent
    assert w.mode == "recog" and np.allclose(w.predict(), x_hat, atol=1e-6)


def test_load_dir_checks_the_model(tmp_path):
    g, m = _learn(tmp_path)
    with pytest.raises(ValueError, match=r"holds a MLDA model, not a GMM one"):
        gmm.GMM(3, load_dir=tmp_path / m.name / "001")
    with pytest.raises(ValueError, match=r"was learned with K=3 \(this module: 4\)"):
        gmm.GMM(4, load_dir=tmp_path / g.name / "001")
    pt = tmp_path / g.name / "001" / "model.pt"
    data = bytearray(pt.read_bytes())
    data[-5] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"SHA-256|sha256|checksum"):
        gmm.GMM(3, load_dir=tmp_path / g.name / "001")
    # the original VAE's recog(): an update in recognition mode, with the module's own model
    srk.reset_module_counter(g.index)
    r = gmm.GMM(3, 20, "gmm")
    r.connect(srk.Observation(np.asarray(g.children[0].data)))
    r.recog()
    assert r.mode == "recog" and r.load_dir == r.output_dir and (tmp_path / g.name / "000" / "Pdz_recog.txt").is_file()
    # and the original's recog/ folder with its suffix-less names
    for name in ("Pdz", "class"):
        assert (tmp_path / g.name / "recog" / f"{name}.txt").read_bytes() == \
            (tmp_path / g.name / "000" / f"{name}_recog.txt").read_bytes()
    assert not any("learn" in f for f in os.listdir(tmp_path / g.name / "recog"))
    # the original pixyz modules' update(i): i must be the module's own iteration count
    with pytest.raises(ValueError, match=r"update\(5\) names iteration 5, but this module has done 2 updates"):
        g.update(5)
    g.update(2)
    assert g.n_updates_ == 3 and (tmp_path / g.name / "002" / "model.json").is_file()
    loaded = gmm.GMM(3, load_dir=tmp_path / g.name / "000")
    assert loaded.mode == "recog" and torch.equal(torch.as_tensor(loaded.means_), torch.as_tensor(
        gmm.GMM(3, load_dir=tmp_path / g.name / "000").means_))


LEARN = """
import sys
import numpy as np
import torch
import serket_pyro as srk
from serket_pyro import vae, gmm, mlda, mm
torch.set_num_threads(1)
data = np.load("data.npz")
srk.set_seed(0)
obs1 = srk.Observation(data["x"])
obs2 = srk.Observation(data["words"])
vae1 = vae.VAE(2, 3, "vae", 20, 1, "BCE")                 # the 2019-2023 positional order
gmm1 = gmm.GMM(3, 20, "gmm", data["z"])                  # GMM(K, itr, name, category)
mlda1 = mlda.MLDA(3, [50, 50], 20, "mlda", data["z"])    # MLDA(K, weights, itr, name, category)
mm1 = mm.MarkovModel(100, "mm")
vae1.connect(obs1); gmm1.connect(vae1); mlda1.connect(obs2, gmm1); mm1.connect(mlda1)
for it in range(2):
    for m in (vae1, gmm1, mlda1, mm1):
        m.update()
# recognition in this process: new modules (serket_pyro's own API) given the trained state
srk.set_output_root("in_process")
new1, new2 = srk.Observation(data["x_new"]), srk.Observation(data["words_new"])
r_vae = vae.VAE(2, 3, 20, mode="recog")
r_gmm = gmm.GMM(3, 20, mode="recog")
r_mlda = mlda.MLDA(3, [50, 50], 20, mode="recog")
r_mm = mm.MarkovModel(mode="recog")
r_vae.connect(new1); r_gmm.connect(r_vae); r_mlda.connect(new2, r_gmm); r_mm.connect(r_mlda)
srk.set_seed(1)
out = {}
for m, trained in ((r_vae, vae1), (r_gmm, gmm1), (r_mlda, mlda1), (r_mm, mm1)):
    m.load_state_dict(trained.state_dict())
    m.update()
    out[trained.name] = np.asarray(m.forward_msg)
np.savez("in_process.npz", **out)
"""

RECOG = """
import sys
import numpy as np
import torch
import serket_pyro as srk
from serket_pyro import vae, gmm, mlda, mm
torch.set_num_threads(1)
data = np.load("data.npz")
for how in sys.argv[1:]:
    srk.reset_module_counter()  # each way as a fresh script would number its modules
    obs1 = srk.Observation(data["x_new"])
    obs2 = srk.Observation(data["words_new"])
    if how == "load_dir":   # the original's load_dir: the folder of the last learning iteration
        vae1 = vae.VAE(2, epoch=3, name="vae", batch_size=20, load_dir="module002_vae/001")
        gmm1 = gmm.GMM(3, 20, "gmm", None, "module003_gmm/001")
        mlda1 = mlda.MLDA(3, [50, 50], 20, "mlda", None, "module004_mlda/001")
        mm1 = mm.MarkovModel(100, "mm", "module005_mm/001")
    elif how == "mode":     # the original's mode="recog": the model in the module's own folder
        vae1 = vae.VAE(2, 3, "vae", 20, 1, "BCE", "recog")
        gmm1 = gmm.GMM(3, 20, "gmm", None, "recog")
        mlda1 = mlda.MLDA(3, [50, 50], 20, "mlda", None, "recog")
        mm1 = mm.MarkovModel(100, "mm", "recog")
    else:                   # update(load_trained_model=...)
        vae1 = vae.VAE(2, 3, "vae", 20)
        gmm1 = gmm.GMM(3, 20, "gmm")
        mlda1 = mlda.MLDA(3, [50, 50], 20, "mlda")
        mm1 = mm.MarkovModel(100, "mm")
    vae1.connect(obs1); gmm1.connect(vae1); mlda1.connect(obs2, gmm1); mm1.connect(mlda1)
    srk.set_seed(1)
    out = {}
    for m in (vae1, gmm1, mlda1, mm1):
        if how == "update":
            m.update(load_trained_model=m.name + "/001")
        else:
            m.update()
        assert m.mode == "recog"
        out[m.name] = np.asarray(m.forward_msg)
    np.savez(f"fresh_{how}.npz", **out)
"""


def _run(tmp_path, script, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], cwd=tmp_path, env=env, check=True,
                   timeout=300, capture_output=True, text=True)


def test_recognition_in_a_fresh_process_equals_recognition_in_process(tmp_path):
    """Learn in one process with the original's calls, recognise new data in fresh processes
    (load_dir, mode="recog", update(load_trained_model=...)): the same messages as recognising
    with the trained modules in the learning process."""
    rng = np.random.default_rng(0)
    z, words = _counts(60)
    z_new, words_new = _counts(30, seed=1)
    x = np.clip(np.eye(3)[z].repeat(4, axis=1) * 0.8 + 0.1 + rng.normal(0, 0.05, (60, 12)), 0, 1)
    x_new = np.clip(np.eye(3)[z_new].repeat(4, axis=1) * 0.8 + 0.1 + rng.normal(0, 0.05, (30, 12)), 0, 1)
    np.savez(tmp_path / "data.npz", x=x, words=words, z=z, x_new=x_new, words_new=words_new)
    _run(tmp_path, LEARN)
    ref = dict(np.load(tmp_path / "in_process.npz"))
    assert set(ref) == {"module002_vae", "module003_gmm", "module004_mlda", "module005_mm"}
    assert ref["module004_mlda"].shape == (30, 3)
    _run(tmp_path, RECOG, "load_dir", "mode", "update")
    for how in ("load_dir", "mode", "update"):
        got = dict(np.load(tmp_path / f"fresh_{how}.npz"))
        assert set(got) == set(ref), how
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{how}: {k}")
    assert (tmp_path / "module004_mlda" / "000" / "Pdz_recog.txt").is_file()
