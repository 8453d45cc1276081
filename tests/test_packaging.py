"""The installed package as a user meets it: version, ``python -m serket_pyro``, a fast ``--help``
that imports no torch, and library messages that go through the ``serket_pyro`` logger (never
``print``), which the command's ``-q`` / ``-v`` set."""

import ast
import importlib.metadata
import logging
import os
import subprocess
import sys
import sysconfig

import pytest

import serket_pyro
from serket_pyro.app import cli

HEAVY = ("torch", "pyro", "numpy", "scipy", "matplotlib", "tqdm")
FAST_RUN = ["run", "vae_gmm", "--n", "100", "--epochs", "1", "--batch-size", "50", "--iterations", "1"]


def _python(*args, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, **kw)


def test_version_is_the_distribution_version():
    assert serket_pyro.__version__ == importlib.metadata.version("serket-pyro")
    r = _python("-m", "serket_pyro", "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"serket-pyro {serket_pyro.__version__}"


def test_console_script_is_installed():
    exe = os.path.join(sysconfig.get_path("scripts"), "serket-pyro" + (".exe" if os.name == "nt" else ""))
    assert os.path.isfile(exe), f"{exe} missing: is the package installed (pip install -e .)?"
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == f"serket-pyro {serket_pyro.__version__}", r


def test_python_m_serket_pyro_help():
    r = _python("-m", "serket_pyro", "--help")
    assert r.returncode == 0, r.stderr
    for command in ("run", "recog", "joint", "report", "export-tutorial-data", "--quiet", "--verbose", "--version"):
        assert command in r.stdout
    r = _python("-m", "serket_pyro")  # no command: a usage error, exit 2, one message
    assert r.returncode == 2 and "serket-pyro: error:" in r.stderr


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["run", "--help"], ["recog", "--help"]])
def test_help_and_version_import_no_heavy_module(argv):
    """``serket-pyro --help`` took 5-9 s when the parser's module imported torch and pyro."""
    code = ("import sys\nfrom serket_pyro.app.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    r = _python("-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "HEAVY []"


PEERS = ("sklearn", "hmmlearn", "tomotopy")   # the benchmarks' peers: the `bench` extra only


def test_package_never_imports_the_benchmark_peers():
    """Every module of the package imports without scikit-learn, hmmlearn or tomotopy (they are
    benchmark-only dependencies, ``pip install serket-pyro[bench]``)."""
    code = ("import importlib, pkgutil, sys, serket_pyro\n"
            "for m in pkgutil.walk_packages(serket_pyro.__path__, 'serket_pyro.'):\n"
            "    importlib.import_module(m.name)\n"
            f"print('PEERS', sorted(m for m in sys.modules if m.split('.')[0] in {PEERS!r}))")
    r = _python("-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "PEERS []"


def test_package_logger_has_a_null_handler():
    log = logging.getLogger("serket_pyro")
    assert any(isinstance(h, logging.NullHandler) for h in log.handlers)


def _prints(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]


def test_library_code_does_not_print():
    """Only the command (``app/cli.py``) and the example scripts' result line (``app/runner.py``
    ``print_result``) write to stdout; the library logs."""
    root = os.path.dirname(serket_pyro.__file__)
    allowed = {os.path.join("app", "cli.py"), os.path.join("app", "runner.py")}
    found = {}
    for folder, _, files in os.walk(root):
        for f in files:
            rel = os.path.relpath(os.path.join(folder, f), root)
            if f.endswith(".py") and rel not in allowed and _prints(os.path.join(folder, f)):
                found[rel] = _prints(os.path.join(folder, f))
    assert not found, f"print() in library code (use logging.getLogger(__name__)): {found}"


def test_joint_progress_goes_through_the_logger(caplog, capsys, tmp_path):
    import pyro

    from serket_pyro.datasets import load_mnist_subset
    from serket_pyro.joint import joint_model
    from serket_pyro.models import vae_gmm

    d = load_mnist_subset()
    x, y = d.as_float()[:100], d.category[:100]
    pyro.set_rng_seed(0)
    s = vae_gmm.build(x, y, epochs=1, batch_size=50, gmm_itr=2, output_root=str(tmp_path))
    jm = joint_model(s, chunk_len=25)
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="serket_pyro"):
        jm.fit(1, pretrain_epochs=1, batch_size=50, eval_every=1, progress=True)
    msgs = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert ("serket_pyro.joint.model", logging.INFO, msgs[0][2]) == msgs[0] and "pretrain epoch 1" in msgs[0][2]
    assert any(m.startswith("initial clusters: acc ") for _, _, m in msgs), msgs
    assert any(m.startswith("epoch 1: loss ") and " acc " in m for _, _, m in msgs), msgs
    assert capsys.readouterr().out == ""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="serket_pyro"):  # progress=False: DEBUG only
        jm.fit(1, batch_size=50, init=None, eval_every=1)
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    assert capsys.readouterr().out == ""


def test_cli_quiet_and_verbose_set_the_level(tmp_path, capsys):
    """A resumed run without a checkpoint says so at INFO; ``-q`` (before or after the command)
    leaves only the results on stdout and nothing on stderr, progress bars included; ``-v`` adds the
    per-iteration DEBUG notes."""
    def run(*flags, name):
        rc = cli.main([*FAST_RUN, "--output", str(tmp_path / name), "--checkpoint-dir", str(tmp_path / f"ck-{name}"),
                       "--resume", *flags])
        out, err = capsys.readouterr()
        assert rc == 0, err
        assert "accuracy" in out  # the summary is the command's result: -q keeps it
        return err

    err = run("--no-progress", name="default")
    assert "no complete checkpoint in" in err and "iteration 1/1 done" not in err
    assert run("-q", name="quiet") == ""
    assert cli.main(["-q", *FAST_RUN, "--output", str(tmp_path / "q2"), "--checkpoint-dir", str(tmp_path / "ck-q2"),
                     "--resume"]) == 0
    assert capsys.readouterr().err == ""
    err = run("--no-progress", "-v", name="verbose")
    assert "serket_pyro.driver: iteration 1/1 done in" in err and "no complete checkpoint in" in err
    log = logging.getLogger("serket_pyro")  # main() leaves logging as it found it
    assert log.level == logging.NOTSET and [type(h) for h in log.handlers] == [logging.NullHandler]
