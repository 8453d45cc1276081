"""Saved graphs and checkpoints that come from someone else: every path, size, checksum and
parameter is checked before anything is read or written (issue 14, "files a user receives").

The attacks go through the ``serket-pyro`` command end to end: nothing may appear outside the
output folder, memory stays bounded (checked on a real child process), and the error is a
message with exit status 2."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

import serket_pyro as srk
from serket_pyro import cli
from serket_pyro.driver import latest_checkpoint, load_checkpoint
from serket_pyro.modules.gmm import GMM
from serket_pyro.modules.mm import MarkovModel
from serket_pyro.persistence import load_graph, save_graph


pytestmark = pytest.mark.skipif(os.name != "posix", reason="symbolic links, FIFOs, rlimits and wait4 are POSIX")


def _tree(root) -> set[str]:
    """Every file and folder under ``root`` (relative paths)."""
    out = set()
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def _retensor(state: dict) -> tuple[bytes, dict]:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    return data, {"state_sha256": hashlib.sha256(data).hexdigest(), "state_bytes": len(data)}


def _edit_json(path, change) -> None:
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))


def _replace_state(folder, json_name, change) -> None:
    """Change tensors of ``folder/state.pt`` and record the new checksum (what an attacker can do)."""
    state = torch.load(folder / "state.pt", weights_only=True)
    change(state)
    data, record = _retensor(state)
    (folder / "state.pt").write_bytes(data)
    _edit_json(folder / json_name, lambda info: info.update(record))


@pytest.fixture(scope="module")
def _saved_once(tmp_path_factory):
    """Observation -> GMM(2) -> MarkovModel trained one iteration on 2-D points, saved."""
    tmp = tmp_path_factory.mktemp("received")
    srk.reset_module_counter()
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (30, 2)), rng.normal(3, 1, (30, 2))])
    obs = srk.Observation(x)
    g = GMM(2, itr=5, output_root=tmp / "train")
    g.connect(obs)
    mm = MarkovModel(output_root=tmp / "train")
    mm.connect(g)
    srk.fit(mm, n_iter=1, seed=0, progress=False)
    save_graph(tmp / "g", mm)
    np.save(tmp / "x.npy", x)
    return tmp


@pytest.fixture
def received(_saved_once, tmp_path):
    """``tmp_path/inbox/g`` (a received copy of the saved graph), ``tmp_path/x.npy`` and the
    training outputs ``tmp_path/train`` that its graph.json names."""
    shutil.copytree(_saved_once / "g", tmp_path / "inbox" / "g")
    shutil.copy(_saved_once / "x.npy", tmp_path / "x.npy")
    shutil.copytree(_saved_once / "train", tmp_path / "train")
    _edit_json(tmp_path / "inbox" / "g" / "graph.json", lambda info: [
        e.update(output_dir=os.path.join(str(tmp_path / "train"), e["name"])) for e in info["modules"]
        if "output_dir" in e])
    return tmp_path / "inbox" / "g"


def _recog(graph, tmp_path):
    return cli.main(["recog", str(graph), "--data", str(tmp_path / "x.npy"), "--output",
                     str(tmp_path / "work" / "out"), "--iterations", "1", "--no-progress"])


def test_received_graph_recognises_inside_the_output_folder(received, tmp_path):
    """The untampered copy works, and writes only under --output (the reference for the attacks)."""
    before = _tree(tmp_path)
    assert _recog(received, tmp_path) == 0
    new = _tree(tmp_path) - before
    assert new and all(p.startswith(os.path.join("work", "out")) or p == "work" for p in new)


@pytest.mark.parametrize("name", ["../../escaped", "ABS", "a/b", "..", ".hidden", "", "x" * 101])
def test_module_name_that_is_a_path_is_refused(received, tmp_path, capsys, name):
    if name == "ABS":
        name = str(tmp_path / "abs_escaped")

    def rename(info):
        old = info["modules"][1]["name"]  # the GMM; the Markov model names it as its child
        for e in info["modules"]:
            e["name"] = name if e["name"] == old else e["name"]
            e["children"] = [name if c == old else c for c in e["children"]]

    _edit_json(received / "graph.json", rename)
    before = _tree(tmp_path)
    assert _recog(received, tmp_path) == 2
    err = capsys.readouterr().err
    assert "module name" in err and "refused" in err and "Traceback" not in err
    assert _tree(tmp_path) == before  # nothing written anywhere, not even the output folder


def test_state_file_outside_the_graph_is_refused(received, tmp_path, capsys):
    shutil.copy(received / "state.pt", tmp_path / "inbox" / "outside.pt")  # a valid file, but outside
    _edit_json(received / "graph.json", lambda info: info.update(state_file="../outside.pt"))
    assert _recog(received, tmp_path) == 2
    assert "state file '../outside.pt'" in capsys.readouterr().err
    # a plain name that is a symbolic link out of the folder
    os.symlink(os.path.join("..", "outside.pt"), received / "link.pt")
    _edit_json(received / "graph.json", lambda info: info.update(state_file="link.pt"))
    assert _recog(received, tmp_path) == 2
    assert "leads outside" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_report_of_a_received_graph_writes_next_to_it(received, tmp_path, capsys):
    """graph.json names the folder of its training outputs; the PNGs go next to the graph, not there."""
    before = _tree(tmp_path / "train")
    assert cli.main(["report", str(received)]) == 0
    assert "transitions_module002_mm.png" in capsys.readouterr().out
    assert _tree(tmp_path / "train") == before
    assert (received / "report" / "transitions_module002_mm.png").exists()


def _import_address_space() -> int:
    """Bytes of address space a child holds once torch and pyro are imported: a CUDA build of torch
    maps several GiB that it never touches (torch 2.14.1+cu130 cannot even be imported under a
    3 GiB limit), a CPU build about 1 GiB."""
    code = ("import re, torch, pyro\n"
            "print(re.search(r'VmPeak:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return int(r.stdout) * 1024 if r.returncode == 0 and r.stdout.strip().isdigit() else 0


# Runs the CLI and, at exit, writes the process's own peak resident memory (VmHWM: of the program
# after exec; ru_maxrss would also count the pytest process it was forked from, which after a
# full suite holds more than the limit the test checks).
_PEAK_LAUNCHER = """
import atexit, re, runpy, sys
out = sys.argv[1]
def peak():
    with open('/proc/self/status') as f:
        kb = re.search(r'VmHWM:\\s+(\\d+) kB', f.read()).group(1)
    with open(out, 'w') as f:
        f.write(kb)
atexit.register(peak)
sys.argv = ['serket-pyro'] + sys.argv[2:]
runpy.run_module('serket_pyro.app.cli', run_name='__main__', alter_sys=True)
"""


def _child_recog(graph, tmp_path):
    """``serket-pyro recog`` in a child process limited to 3 GiB of address space beyond what
    importing torch takes; returns ``(exit status, stderr, peak resident memory in MiB)`` (inf
    when the child died before writing it)."""
    import resource

    cap = 3 * 2**30 + _import_address_space()

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = dict(os.environ, OMP_NUM_THREADS="1")
    peak_file = tmp_path / "peak_kb"
    p = subprocess.Popen([sys.executable, "-c", _PEAK_LAUNCHER, str(peak_file), "recog", str(graph), "--data",
                          str(tmp_path / "x.npy"), "--output", str(tmp_path / "work" / "out"), "--no-progress"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limit)
    timer = threading.Timer(120, p.kill)  # the code before the checks blocked forever on a FIFO
    timer.start()
    err = p.stderr.read().decode()
    _, status, _ = os.wait4(p.pid, 0)
    timer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    peak = int(peak_file.read_text()) / 1024 if peak_file.exists() else float("inf")
    return p.returncode, err, peak


@pytest.mark.parametrize("attack", ["dev_zero", "fifo", "symlink_inside", "huge_unrecorded", "huge_recorded"])
def test_huge_or_endless_state_file_keeps_memory_bounded(received, tmp_path, attack):
    state = received / "state.pt"
    os.remove(state)
    if attack == "dev_zero":
        os.symlink("/dev/zero", state)
        expected = "leads outside"
    elif attack == "fifo":  # endless, and not a symbolic link
        os.mkfifo(state)
        expected = "not a regular file"
    elif attack == "symlink_inside":  # a link to a huge file in the folder itself
        with open(received / "big.bin", "wb") as f:
            f.truncate(8 * 2**30)
        os.symlink("big.bin", state)
        expected = "symbolic link"
    else:
        with open(state, "wb") as f:  # sparse: no disk space used
            f.truncate(8 * 2**30 if attack == "huge_unrecorded" else 2**30)
        expected = "corrupt or truncated"
        if attack == "huge_recorded":  # the size recorded to match, the checksum cannot
            _edit_json(received / "graph.json", lambda info: info.update(state_bytes=2**30))
    rc, err, peak_mib = _child_recog(received, tmp_path)
    assert rc == 2, err[-2000:]
    assert expected in err and "Traceback" not in err
    assert peak_mib < 700, f"peak memory {peak_mib:.0f} MiB"
    assert not (tmp_path / "work").exists()


def test_deeply_nested_or_oversized_graph_json_is_refused(received, tmp_path, capsys):
    (received / "graph.json").write_text("[" * 100_000)
    assert _recog(received, tmp_path) == 2
    assert "nested too deeply" in capsys.readouterr().err
    with open(received / "graph.json", "wb") as f:
        f.truncate(100 * 2**20)
    assert _recog(received, tmp_path) == 2
    assert "more than the" in capsys.readouterr().err
    os.remove(received / "graph.json")
    os.symlink(received / "state.pt", received / "graph.json")
    assert _recog(received, tmp_path) == 2
    assert "symbolic link" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["nan_trans", "negative_trans", "unnormalised_init", "nan_message"])
def test_invalid_parameters_in_a_saved_graph_are_refused(received, tmp_path, capsys, damage):
    def change(state):
        if damage == "nan_trans":
            state["module002_mm/state/trans_prob"][0, 0] = float("nan")
        elif damage == "negative_trans":
            state["module002_mm/state/trans_prob"][0] = torch.tensor([1.5, -0.5], dtype=torch.float64)
        elif damage == "unnormalised_init":
            state["module002_mm/state/init_prob"] *= 3
        else:  # recognition does not restore messages: a message is checked when training continues
            state["module002_mm/forward/class_log_probs"][0, 0] = float("nan")

    _replace_state(received, "graph.json", change)
    if damage == "nan_message":
        with pytest.raises(ValueError, match=r"state.pt: the saved state of module002_mm is invalid: .*NaN"):
            load_graph(received, [np.load(tmp_path / "x.npy")], output_root=tmp_path / "work" / "out")
        assert not (tmp_path / "work").exists()
        return
    assert _recog(received, tmp_path) == 2
    err = capsys.readouterr().err
    assert "state.pt: the saved state of module002_mm is invalid" in err
    assert not (tmp_path / "work").exists()


# ------------------------------------------------------------------------------------ checkpoints
TINY = ["--n", "100", "--epochs", "1", "--batch-size", "50", "--no-progress"]


@pytest.fixture(scope="module")
def _checkpoint_once(tmp_path_factory):
    from conftest import DATA_DIR

    if not os.path.isdir(DATA_DIR):
        pytest.skip(f"shared data folder {DATA_DIR} not found (set SERKET_PYRO_DATA)")
    tmp = tmp_path_factory.mktemp("ckpt")
    srk.reset_module_counter()
    try:
        assert cli.main(["run", "vae_gmm_mm", *TINY, "--iterations", "1", "--data-dir", DATA_DIR,
                         "--output", str(tmp / "train"), "--checkpoint-dir", str(tmp / "ck")]) == 0
    finally:
        srk.set_output_root(None)
    return tmp / "ck"


@pytest.fixture
def checkpoint(_checkpoint_once, tmp_path):
    """A copy of a one-iteration checkpoint folder of `run vae_gmm_mm` (TINY settings)."""
    shutil.copytree(_checkpoint_once, tmp_path / "ck")
    return tmp_path / "ck"


def _resume(ck, tmp_path, data_dir, *extra):
    return cli.main(["run", "vae_gmm_mm", *TINY, "--iterations", "2", "--data-dir", data_dir,
                     "--output", str(tmp_path / "out2"), "--checkpoint-dir", str(ck), "--resume", *extra])


@pytest.mark.parametrize("damage", ["nan_trans", "negative_trans", "vae_nan_weight"])
def test_invalid_checkpoint_parameters_are_refused_before_any_file(checkpoint, tmp_path, data_dir, capsys,
                                                                   damage):
    def change(state):
        if damage == "vae_nan_weight":
            state["module001_vae/state/encoder.fc1.weight"][0, 0] = float("nan")
        else:
            a = state["module003_mm/state/trans_prob"]
            a[0, 0] = float("nan") if damage == "nan_trans" else -a[0, 0] - 0.1

    _replace_state(checkpoint / "iter_000", "checkpoint.json", change)
    before = _tree(tmp_path)
    assert _resume(checkpoint, tmp_path, data_dir) == 2
    err = capsys.readouterr().err
    assert ("encoder.fc1.weight" if damage == "vae_nan_weight" else "trans_prob") in err
    assert _tree(tmp_path) == before  # not one file: no run.json, no module folder, no checkpoint


def test_checkpoint_checksum_and_pickle_payload(checkpoint, tmp_path):
    srk.reset_module_counter()
    from serket_pyro.models import vae_gmm_mm

    x = np.random.default_rng(0).random((100, 784)).astype(np.float32)
    system = vae_gmm_mm.build(x, latent_dim=18, epochs=1, batch_size=50, output_root=tmp_path / "o")
    mods = [m for m in system.modules.values() if m.learnable]
    it = checkpoint / "iter_000"
    data = bytearray((it / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (it / "state.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(it, mods)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    payload, record = _retensor({"x": Evil()})
    (it / "state.pt").write_bytes(payload)
    _edit_json(it / "checkpoint.json", lambda info: info.update(record))
    with pytest.raises(ValueError, match="holds pickled Python objects"):
        load_checkpoint(it, mods)
    _edit_json(it / "checkpoint.json", lambda info: [info.pop("state_sha256"), info.pop("state_bytes")])
    with pytest.raises(ValueError, match="records no valid size and SHA-256"):
        load_checkpoint(it, mods)


@pytest.mark.parametrize(("flags", "named"), [(["--epochs", "2"], "--epochs was 1, this run has 2"),
                                              (["--no-deskew"], "--deskew was True"),
                                              (["--seed", "1"], "--seed was 0"),
                                              (["--classes", "5"], "--classes was 10"),
                                              (["--n", "90"], "--n was 100")])
def test_resume_with_other_settings_is_refused(checkpoint, tmp_path, data_dir, capsys, flags, named):
    before = _tree(tmp_path)
    assert _resume(checkpoint, tmp_path, data_dir, *flags) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and named in err
    assert _tree(tmp_path) == before


def test_resume_with_other_module_config_is_refused(checkpoint, tmp_path):
    """Library use (no settings): the modules' configs are compared, e.g. another K."""
    srk.reset_module_counter()
    from serket_pyro.models import vae_gmm_mm

    x = np.random.default_rng(0).random((100, 784)).astype(np.float32)
    system = vae_gmm_mm.build(x, latent_dim=18, epochs=1, batch_size=50, n_classes=5, output_root=tmp_path / "o")
    with pytest.raises(ValueError, match="module002_gmm K was 10, this run has 5"):
        system.fit(n_iter=2, checkpoint_dir=checkpoint, resume=True, progress=False)
    assert not (tmp_path / "o").exists()


def test_latest_checkpoint_orders_numerically(tmp_path):
    for d in ("iter_999", "iter_1000", "iter_99", "iter_x", "iter_2000"):
        (tmp_path / d).mkdir()
        if d != "iter_2000":  # incomplete: no JSON
            (tmp_path / d / "checkpoint.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == os.path.join(str(tmp_path), "iter_1000")


def test_checkpoint_folder_that_is_a_symlink_is_refused(checkpoint, tmp_path):
    os.rename(checkpoint / "iter_000", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", checkpoint / "iter_000")
    with pytest.raises(ValueError, match="leads outside"):
        load_checkpoint(latest_checkpoint(checkpoint), [])


def test_save_graph_refuses_a_name_load_graph_would_refuse(tmp_path):
    g = GMM(2, itr=2, output_root=tmp_path)
    g.connect(srk.Observation(np.random.default_rng(0).normal(size=(20, 2))))
    srk.fit(g, n_iter=1, seed=0, progress=False)
    g.name = "../gmm"
    with pytest.raises(ValueError, match="not a plain name"):
        save_graph(tmp_path / "saved", g)
    assert not (tmp_path / "saved").exists()


def test_load_graph_names_the_state_file_problem(received):
    os.remove(received / "state.pt")
    with pytest.raises(ValueError, match="state.pt not found"):
        load_graph(received, mode="recog")
