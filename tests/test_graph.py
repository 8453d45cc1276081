"""The module graph: naming, connect, message routing (several parents), driver, checkpoints."""

import json
import os

import numpy as np
import pytest
import torch

import serket_pyro as srk
from serket_pyro import output
from serket_pyro.messages import ClassProbs, GaussianMessage, PointMessage, combine


class Echo(srk.Module):
    """Test module: forward = fixed class probabilities, backward = a fixed message per child."""

    def __init__(self, probs=None, down=None, name="echo"):
        super().__init__(name)
        self.probs = probs
        self.down = down
        self.seen_backward = []

    def update(self):
        obs = self.get_observations()
        self.seen_backward.append(self.get_backward_msg())
        n = obs[0].N
        p = self.probs if self.probs is not None else np.full((n, 2), 0.5)
        self.set_forward_msg(ClassProbs.from_probs(p))
        self.send_backward_msgs([self.down] * len(self.children))
        self.writer().savetxt("n_learn.txt", np.array([self.n_updates_]))
        self.metrics_ = {"n": float(self.n_updates_)}
        self.n_updates_ += 1


def test_naming_counts_every_module_including_observations():
    obs1 = srk.Observation(np.zeros((4, 3)))
    obs2 = srk.Observation(np.zeros((4, 2)))
    mods = [Echo(name=n) for n in ("vae", "gmm", "mlda", "mm")]
    assert obs1.name == "module000_obs" and obs2.name == "module001_obs"
    assert [m.name for m in mods] == ["module002_vae", "module003_gmm", "module004_mlda", "module005_mm"]


def test_connect_order_fixes_observation_order():
    a = srk.Observation(np.zeros((3, 1)))
    b = srk.Observation(np.ones((3, 2)))
    m = Echo()
    m.connect(b, a)
    obs = m.get_observations()
    assert [o.dim for o in obs] == [2, 1]
    assert m.children == (b, a) and a.parents == [m] and b.parents == [m]


def test_reconnect_replaces_children():
    a, b = srk.Observation(np.zeros((3, 1))), srk.Observation(np.zeros((3, 1)))
    m = Echo()
    m.connect(a)
    m.connect(b)
    assert m.children == (b,) and a.parents == [] and b.parents == [m]


def test_several_parents_messages_are_multiplied():
    obs = srk.Observation(np.zeros((3, 1)))
    child = Echo(name="child")
    child.connect(obs)
    p1 = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    p2 = np.array([[0.5, 0.5], [0.3, 0.7], [0.2, 0.8]])
    par1 = Echo(down=ClassProbs.from_probs(p1), name="p1")
    par2 = Echo(down=ClassProbs.from_probs(p2), name="p2")
    par1.connect(child)
    par2.connect(child)
    srk.fit(child, n_iter=2, progress=False)
    expected = p1 * p2 / (p1 * p2).sum(1, keepdims=True)
    # first update of child saw nothing; second saw both parents' messages combined
    assert child.seen_backward[0] is None
    np.testing.assert_allclose(child.seen_backward[1].probs.numpy(), expected, atol=1e-12)
    assert set(child.get_backward_msgs()) == {"module002_p1", "module003_p2"}


def test_gaussian_product_is_precision_weighted():
    a = GaussianMessage(torch.zeros(2, 1), torch.ones(2, 1))
    b = GaussianMessage(torch.full((2, 1), 3.0), torch.full((2, 1), 0.5))
    c = a * b
    # precisions 1 and 4: loc = (0*1 + 3*4)/5, var = 1/5
    np.testing.assert_allclose(c.loc.numpy(), 2.4)
    np.testing.assert_allclose(c.scale.numpy() ** 2, 0.2)


def test_messages_of_different_kinds_do_not_combine():
    with pytest.raises(TypeError, match="cannot combine"):
        combine([ClassProbs.uniform(2, 3), GaussianMessage(torch.zeros(2, 3))])
    with pytest.raises(TypeError):
        PointMessage(np.zeros((2, 1))) * PointMessage(np.zeros((2, 1)))


def test_class_probs_validation():
    with pytest.raises(ValueError, match="negative"):
        ClassProbs.from_probs(np.array([[0.5, -0.1]]))
    with pytest.raises(ValueError, match="all zero"):
        ClassProbs.from_probs(np.array([[0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        ClassProbs.from_probs(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        ClassProbs(np.zeros(3))
    m = ClassProbs.from_probs(np.array([[1e-300, 1.0], [2.0, 2.0]]))
    np.testing.assert_allclose(m.probs.sum(1).numpy(), 1.0)


def test_message_shape_is_validated_and_names_both_modules():
    obs = srk.Observation(np.zeros((5, 2)))
    child = Echo(name="child")
    child.connect(obs)
    parent = Echo(down=ClassProbs.uniform(4, 2), name="parent")
    parent.connect(child)
    child.update()
    with pytest.raises(ValueError, match="module002_parent.*4 data points.*module001_child.*5"):
        parent.update()


def test_bad_inputs_raise_before_any_work():
    with pytest.raises(ValueError, match="NaN or infinite"):
        srk.Observation(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        srk.Observation(np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match="empty"):
        srk.Observation(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="scalar"):
        srk.Observation(np.float64(1.0))
    with pytest.raises(ValueError, match="numeric"):
        srk.Observation(np.array([["a", "b"]]))
    a, b = srk.Observation(np.zeros((3, 1))), srk.Observation(np.zeros((4, 1)))
    m = Echo(name="m")
    with pytest.raises(ValueError, match=r"module\d{3}_m: children have different numbers.*N=3.*N=4"):
        m.connect(a, b)
    with pytest.raises(ValueError, match="itself"):
        m.connect(m)
    with pytest.raises(ValueError, match="Observation"):
        a.connect(b)
    with pytest.raises(ValueError, match="wrap arrays"):
        m.connect(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="same child twice"):
        m.connect(a, a)


def test_cycle_is_refused():
    obs = srk.Observation(np.zeros((3, 1)))
    a, b, c = Echo(name="a"), Echo(name="b"), Echo(name="c")
    a.connect(obs)
    b.connect(a)
    c.connect(b)
    with pytest.raises(ValueError, match="cycle"):
        a.connect(c)


def test_update_before_children_is_a_clear_error():
    obs = srk.Observation(np.zeros((3, 1)))
    a, b = Echo(name="a"), Echo(name="b")
    a.connect(obs)
    b.connect(a)
    with pytest.raises(ValueError, match="module001_a.*has not been updated yet"):
        b.update()
    with pytest.raises(ValueError, match="no children"):
        Echo(name="lonely").update()


def test_update_order_is_bottom_up():
    obs1, obs2 = srk.Observation(np.zeros((3, 1))), srk.Observation(np.zeros((3, 1)))
    top = Echo(name="top")
    mid = Echo(name="mid")
    low = Echo(name="low")
    low.connect(obs1)
    mid.connect(low)
    top.connect(obs2, mid)  # top built before mid and low
    assert [m.name for m in srk.update_order(obs1)] == ["module004_low", "module003_mid", "module002_top"]


def test_outputs_per_iteration_and_latest_at_top(tmp_path):
    obs = srk.Observation(np.zeros((3, 1)))
    m = Echo()
    m.connect(obs)
    for _ in range(3):
        m.update()
    d = tmp_path / "module001_echo"
    assert sorted(os.listdir(d)) == ["000", "001", "002", "n_learn.txt"]
    assert np.loadtxt(d / "n_learn.txt") == 2
    assert np.loadtxt(d / "001" / "n_learn.txt") == 1


def test_output_root_setting(tmp_path):
    srk.set_output_root(tmp_path / "runs")
    obs = srk.Observation(np.zeros((3, 1)))
    m = Echo()
    m.connect(obs)
    m.update()
    assert (tmp_path / "runs" / "module001_echo" / "n_learn.txt").exists()
    other = Echo(name="own")
    other.output_root = tmp_path / "mine"
    other.connect(obs)
    other.update()
    assert (tmp_path / "mine" / "module002_own" / "000" / "n_learn.txt").exists()


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    output.atomic_savetxt(path, np.arange(3))
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(output.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        output.atomic_savetxt(path, np.arange(1000))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.txt"]  # no temp file left behind


def test_fit_history_checkpoints_and_resume(tmp_path):
    def build():
        srk.reset_module_counter()
        obs = srk.Observation(np.zeros((3, 1)))
        m = Echo(down=None)
        m.connect(obs)
        return m

    m = build()
    hist = srk.fit(m, n_iter=3, seed=1, progress=False, checkpoint_dir=tmp_path / "ck")
    assert [h["module001_echo"]["n"] for h in hist] == [0.0, 1.0, 2.0]
    assert sorted(os.listdir(tmp_path / "ck")) == ["iter_000", "iter_001", "iter_002", "metrics.jsonl"]
    lines = (tmp_path / "ck" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [0, 1, 2]
    state = torch.load(tmp_path / "ck" / "iter_002" / "state.pt", weights_only=True)
    assert "module001_echo/forward/class_log_probs" in state

    # resume after iteration 1 of a 3-iteration run: only iteration 2 runs again
    import shutil

    shutil.rmtree(tmp_path / "ck" / "iter_002")
    m2 = build()
    hist2 = srk.fit(m2, n_iter=3, progress=False, checkpoint_dir=tmp_path / "ck", resume=True)
    assert [h["iteration"] for h in hist2] == [0, 1, 2]
    assert m2.n_updates_ == 3 and len(m2.seen_backward) == 1


def test_rng_state_restored_exactly():
    from serket_pyro.rng_state import get_rng_state, set_rng_state
    import random

    srk.set_seed(3)
    st = get_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(st)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_cuda_generators_are_saved_and_restored(monkeypatch):
    """With CUDA in use, the checkpoint's RNG state holds every device's generator and resuming
    restores it (a fake two-device CUDA here: this machine has none; the device run checks it)."""
    from serket_pyro import rng_state

    gens = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [g.clone() for g in gens])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: gens.__setitem__(slice(None), states))
    st = rng_state.get_rng_state()
    assert st["cuda"].shape == (2, 16) and st["cuda"].dtype == torch.uint8
    saved = [g.clone() for g in gens]
    gens[0] = torch.zeros(16, dtype=torch.uint8)  # the generators move on
    rng_state.set_rng_state(st)
    assert all(torch.equal(a, b) for a, b in zip(gens, saved))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="for 2 device"):
        rng_state.set_rng_state(st)
    # without CUDA initialised nothing is asked (asking would initialise it)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert "cuda" not in rng_state.get_rng_state()


def test_corrupt_checkpoint_is_reported(tmp_path):
    obs = srk.Observation(np.zeros((3, 1)))
    m = Echo()
    m.connect(obs)
    srk.fit(m, n_iter=1, progress=False, checkpoint_dir=tmp_path / "ck")
    p = tmp_path / "ck" / "iter_000" / "state.pt"
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(ValueError, match="corrupt"):
        srk.load_checkpoint(tmp_path / "ck" / "iter_000", [m])


def test_seed_makes_torch_numpy_reproducible():
    srk.set_seed(5)
    a = torch.rand(2), np.random.rand(2)
    srk.set_seed(5)
    b = torch.rand(2), np.random.rand(2)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_large_arrays_are_written_as_npy_and_read_back(tmp_path, monkeypatch):
    """Arrays over the text limit go to .npy (never both forms in one folder); load_output_array
    reads either; set_text_limit(None) writes text again, as the original did."""
    monkeypatch.setattr(output, "_TEXT_LIMIT", output.get_text_limit())  # restored after the test
    output.set_text_limit(100)
    w = output.OutputWriter(tmp_path, 0)
    big = np.arange(101 * 3, dtype=np.float32).reshape(101, 3) / 7
    w.savetxt("P_learn.txt", big)
    w.savetxt("small_learn.txt", np.arange(100.0))
    # the large one once, at the top (the latest); small ones also per iteration
    assert sorted(f for f in os.listdir(tmp_path) if f != "000") == ["P_learn.npy", "small_learn.txt"]
    assert sorted(os.listdir(tmp_path / "000")) == ["small_learn.txt"]
    got = output.load_output_array(tmp_path, "P_learn.txt")
    assert got.dtype == np.float32 and np.array_equal(got, big)  # bit for bit, unlike %.8g text
    for folder in (tmp_path, tmp_path / "000"):
        np.testing.assert_array_equal(output.load_output_array(folder, "small_learn.txt").ravel(), np.arange(100.0))
    assert output.load_output_array(tmp_path, "absent.txt") is None
    output.set_text_limit(None)
    w.savetxt("P_learn.txt", big)
    assert not (tmp_path / "P_learn.npy").exists() and not (tmp_path / "000" / "P_learn.npy").exists()
    np.testing.assert_allclose(output.load_output_array(tmp_path, "P_learn.txt"), big, rtol=1e-7)
    for bad in (-1, 2.5, True, "7"):
        with pytest.raises(ValueError, match="text limit"):
            output.set_text_limit(bad)
