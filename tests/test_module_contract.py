"""The module contract (:class:`serket_pyro.Module`), checked on every Module subclass the package
defines (discovered by walking ``serket_pyro`` and ``Module.__subclasses__()``, not listed) and on
the module of ``examples/custom_module.py``: construction from defaults (plus the class's
``test_args``), messages, files per iteration, config and state round trips, recognition after
``save_graph`` / ``load_graph`` in a fresh process, errors that name the module; and the array
behaviour of messages."""

import importlib
import io
import json
import os
import pkgutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import serket_pyro
import serket_pyro as srk
from serket_pyro.messages import ClassProbs, GaussianMessage, Message, PointMessage
from serket_pyro.module import Module, Observation

EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "examples"))
N = 12


def _subclasses(cls):
    for s in cls.__subclasses__():
        yield s
        yield from _subclasses(s)


def discover_modules():
    """Every Module subclass defined in serket_pyro (all subpackages imported), plus the example's."""
    for info in pkgutil.walk_packages(serket_pyro.__path__, "serket_pyro."):
        importlib.import_module(info.name)
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    example = importlib.import_module("custom_module")
    found = {c for c in _subclasses(Module) if c.__module__.startswith("serket_pyro.")
             and not issubclass(c, Observation)}  # observations (data, extractors) have tests of their own
    return sorted(found, key=lambda c: c.__qualname__) + [example.PCA]


MODULES = discover_modules()


def test_discovery_finds_the_four_modules_and_the_example():
    names = {c.__qualname__ for c in MODULES}
    assert {"VAE", "GMM", "MLDA", "MarkovModel", "PCA"} <= names, names


def tiny_input(kind, seed=0):
    """An Observation of N points sending a message of ``kind``."""
    rng = np.random.default_rng(seed)
    if kind is ClassProbs:
        return Observation(ClassProbs.from_probs(rng.dirichlet(np.ones(3), size=N)))
    if kind is GaussianMessage:
        return Observation(GaussianMessage(rng.normal(size=(N, 4)), 0.5))
    return Observation(rng.uniform(size=(N, 4)))


def like(msg, seed=1):
    """A message of the same kind and shape as ``msg`` with other values (a parent's answer)."""
    rng = np.random.default_rng(seed)
    if isinstance(msg, ClassProbs):
        return ClassProbs.from_probs(rng.dirichlet(np.ones(msg.K), size=msg.N))
    if isinstance(msg, GaussianMessage):
        return GaussianMessage(rng.normal(size=msg.shape), 1.0)
    return PointMessage(rng.normal(size=msg.shape))


def build(cls, **kw):
    """``(observations, module)``: the module connected to one tiny input of its first input kind
    (``cls.test_n_children`` of them, e.g. TtoT), or one per kind of ``cls.test_input_kinds``
    (modules with children of several kinds, e.g. NN)."""
    kinds = getattr(cls, "test_input_kinds", None) or (
        cls.input_kinds[0] if cls.input_kinds[0] is not Message else PointMessage,) * getattr(cls, "test_n_children", 1)
    obs = [tiny_input(k, seed=i) for i, k in enumerate(kinds)]
    m = cls(**{**cls.test_args, **kw})
    m.connect(*obs)
    return obs, m


@pytest.fixture(params=MODULES, ids=lambda c: c.__qualname__)
def cls(request):
    return request.param


def test_construct_update_messages_and_files(cls, make_parent, tmp_path):
    srk.set_output_root(tmp_path)
    obs, m = build(cls)
    assert m.mode == "learn" and m.get_name() == m.name and m.learnable
    srk.set_seed(0)
    m.update()
    fwd = m.forward_msg
    assert isinstance(fwd, Message) and fwd.N == N and m.get_forward_msg() is fwd
    assert m.n_updates_ == 1 and isinstance(m.metrics_, dict)
    assert sorted(os.listdir(os.path.join(m.output_dir, "000")))  # files of the first update
    # a parent answers with a message like the forward one; the second update reads it
    parent = make_parent(like(fwd))
    parent.connect(m)
    parent.update()
    assert m.get_backward_msg() is not None
    m.update()
    assert m.n_updates_ == 2
    first, second = (sorted(os.listdir(os.path.join(m.output_dir, it))) for it in ("000", "001"))
    assert first == second and first, (first, second)
    for c in m.children:  # backward messages: one per child at most, for N points
        for msg in c.get_backward_msgs().values():
            assert msg.N == N


def test_config_round_trip_through_the_constructor(cls):
    _, m = build(cls)
    cfg = m.get_config()
    assert json.loads(json.dumps(cfg)) == cfg
    assert not {"category", "output_root", "name"} & set(cfg)
    assert type(m)(**cfg).get_config() == cfg
    # every __init__ parameter, as given or by default (as scikit-learn's get_params)
    import inspect

    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in cls.test_args:
            assert cfg[p.name] == json.loads(json.dumps(cls.test_args[p.name])), p.name
        elif p.name in cfg and p.default is not None and p.default is not inspect.Parameter.empty:
            assert cfg[p.name] == json.loads(json.dumps(p.default)), p.name


def test_state_round_trip(cls, tmp_path):
    srk.set_output_root(tmp_path)
    _, m = build(cls)
    assert m.state_dict() == {}
    srk.set_seed(0)
    m.update()
    state = m.state_dict()
    if not cls._fitted:  # a module that learns nothing (GroupSum, TtoT, ...) has no state
        assert state == {}
        return
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    _, m2 = build(cls)
    m2.load_state_dict(state)
    again = m2.state_dict()
    assert sorted(again) == sorted(state)
    for k in state:
        assert torch.equal(again[k].to(state[k].dtype), state[k]), k


def _write_inputs(observations, folder):
    """Save each observation's message as ``x<i>.npy``; their kinds (``"class"`` or ``"point"``)."""
    kinds = []
    for i, obs in enumerate(observations):
        msg = obs.forward_msg
        np.save(os.path.join(folder, f"x{i}.npy"), msg.numpy())
        kinds.append("class" if isinstance(msg, ClassProbs) else "point")
    return kinds


def test_recognition_after_save_and_load_in_a_fresh_process(cls, tmp_path):
    srk.set_output_root(tmp_path / "learn")
    obs, m = build(cls)
    srk.set_seed(0)
    m.update()
    srk.save_graph(tmp_path / "saved", m)
    kinds = _write_inputs(obs, tmp_path)
    script = f"""
import os, numpy as np, serket_pyro as srk
from serket_pyro.messages import ClassProbs
xs = [np.load(os.path.join({str(tmp_path)!r}, f"x{{i}}.npy")) for i in range({len(kinds)})]
xs = [ClassProbs.from_probs(x) if k == "class" else x for x, k in zip(xs, {kinds!r})]
s = srk.load_graph({str(tmp_path / 'saved')!r}, xs, mode="recog", output_root={str(tmp_path / 'recog')!r},
                   allowed_packages=["custom_module"])
m = s.result_module
assert m.mode == "recog", m.mode
m.update()
print("RECOG", m.name, m.forward_msg.N, m.forward_msg.kind)
"""
    env = {**os.environ, "PYTHONPATH": EXAMPLES + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"RECOG {m.name} {N} {m.forward_msg.kind}" in r.stdout
    files = os.listdir(tmp_path / "recog" / m.name / "000")
    assert files and all("learn" not in f for f in files), files


def test_every_error_names_the_module(cls, tmp_path):
    srk.set_output_root(tmp_path)
    m = cls(**cls.test_args)
    with pytest.raises(ValueError, match=m.name):
        m.mode = "train"
    with pytest.raises(ValueError, match=m.name):
        m.update()  # not connected
    wrong = next((k for k in (PointMessage, ClassProbs, GaussianMessage) if not issubclass(k, cls.input_kinds)),
                 None)  # None: the module passes any message on (TextSaver)
    if wrong is not None:
        m.connect(tiny_input(wrong))
        with pytest.raises(ValueError, match=m.name):
            m.update()
        assert not os.path.exists(m.output_dir)  # refused before any file was written
    if not cls._fitted:  # nothing learned: recognition needs nothing, no state to corrupt
        return
    _, m = build(cls)
    m.mode = "recog"
    with pytest.raises(ValueError, match=m.name):
        m.update()  # nothing learned yet
    _, m = build(cls)
    srk.set_seed(0)
    m.update()
    state = m.state_dict()
    key = max((k for k, v in state.items() if v.is_floating_point()), key=lambda k: state[k].numel())
    bad = {**state, key: torch.full_like(state[key], float("nan"))}
    with pytest.raises(ValueError, match=m.name):
        m.load_state_dict(bad)


def test_output_root_and_mode_come_from_the_base(cls, tmp_path):
    import inspect

    params = inspect.signature(cls.__init__).parameters
    m = cls(**cls.test_args)
    m.output_root = tmp_path
    assert m.output_dir == os.path.join(str(tmp_path), m.name)
    if "output_root" not in params:  # a user's module need not take it
        assert "output_root" not in m.get_config()


# ----------------------------------------------------------------------------- messages as arrays
def test_messages_behave_like_arrays():
    p = PointMessage(np.arange(6.0).reshape(3, 2))
    c = ClassProbs.from_probs(np.array([[1.0, 3.0], [1.0, 1.0], [0.0, 2.0]]))
    g = GaussianMessage(np.ones((3, 2)), 2.0)
    assert np.array_equal(np.asarray(p), np.arange(6.0).reshape(3, 2))
    assert np.allclose(np.asarray(c), [[0.25, 0.75], [0.5, 0.5], [0.0, 1.0]])
    assert np.array_equal(np.asarray(g), np.ones((3, 2)))
    assert p.shape == c.shape == g.shape == (3, 2) and len(p) == 3 and p.ndim == 2
    assert np.array_equal(p[1], [2.0, 3.0]) and p[2, 1] == 5.0
    f = io.StringIO()
    np.savetxt(f, p)  # the original's np.savetxt(f, self.get_observations()[0])
    assert np.array_equal(np.loadtxt(io.StringIO(f.getvalue())), np.asarray(p))
    # arithmetic with numbers and arrays: plain arrays (tensors with tensors)
    a = np.arange(6.0).reshape(3, 2)
    for out, want in [(p * 2.0, a * 2), (2.0 * p, a * 2), (p + np.ones((3, 2)), a + 1),
                      (np.ones((3, 2)) - p, 1 - a), (p / 2, a / 2), (-p, -a), (p ** 2, a ** 2)]:
        assert isinstance(out, np.ndarray) and np.array_equal(out, want)
    t = torch.ones(3, 2, dtype=torch.float64) * p
    assert isinstance(t, torch.Tensor) and torch.equal(t, p.value)
    assert isinstance(c * 2.0, np.ndarray)
    # between messages: the product rule, types kept
    assert isinstance(c * c, ClassProbs) and np.allclose(np.asarray(c * c)[0], [0.1, 0.9])
    gg = g * g
    assert isinstance(gg, GaussianMessage)
    assert torch.allclose(gg.scale, torch.full((3, 2), 2.0 ** 0.5, dtype=torch.float64))
    with pytest.raises(TypeError):
        p * p
    with pytest.raises(TypeError):
        c * g


def test_set_backward_msg_is_the_parents_message():
    obs = Observation(np.random.default_rng(0).uniform(size=(N, 4)))
    m = srk.GMM(2, itr=2, n_init=1)
    m.connect(obs)
    parent = Module("parent")
    parent.connect(m)
    msg = ClassProbs.from_probs(np.random.default_rng(1).dirichlet([1.0, 1.0], size=N))
    m.set_backward_msg(msg)
    assert m.get_backward_msgs() == {parent.name: msg} and m.get_backward_msg() is msg
    with pytest.raises(ValueError, match=m.name):
        m.set_backward_msg(ClassProbs.from_probs(np.ones((N + 1, 2))))
