"""benchmarks/distributed_parity.py: its steps run in one process at tiny sizes and compare pairs
seeds as it says (the 1- and 2-process comparison itself is in the README)."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import distributed_parity as parity  # noqa: E402


def run(*argv):
    return parity.main(parity.parser().parse_args([str(a) for a in argv]))


def test_parity_steps_in_one_process(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny = ["--n-points", 60, "--epochs", 2, "--iterations", 2, "--output", "par"]
    system = run("system", *tiny, "--seeds", 0, 1, "--json", "s.json")
    assert set(system) == {"0", "1"} and all(len(r["trace"]) == 2 for r in system.values())
    assert all(0 < r["final"] <= 1 and len(r["evidence_noise"]) == 1 for r in system.values())
    g = run("gmm-mm", *tiny, "--seeds", 0, 1, "--gmm-seeds", 3, "--json", "g.json")
    assert all(len(r["runs"]) == 1 and len(r["evidence_noise"]) == 1 for r in g.values())
    v = run("vae-prior", *tiny, "--seeds", 1, "--json", "v.json")
    assert 0 < v["1"]["final"] <= 1 and v["1"]["loss_under_prior"] > 0
    with pytest.raises(SystemExit, match="_vae folder"):  # no system run of this seed
        run("vae-prior", *tiny, "--seeds", 5)

    # compare: the pairs that differ by more than 0.005, and a two-sided sign test over them
    a = {str(i): {"final": 0.5} for i in range(6)}
    b = {str(i): {"final": x} for i, x in enumerate([0.4, 0.4, 0.4, 0.4, 0.503, 0.6])}
    for name, d in (("a.json", a), ("b.json", b)):
        with open(name, "w") as f:
            json.dump(d, f)
    c = run("compare", "a.json", "b.json")
    assert (c["lower"], c["higher"]) == (4, 1)
    assert c["p"] == pytest.approx(2 * (5 + 1) / 32)  # P(>= 4 of 5) twice
    assert "lower on 4, higher on 1 of 6" in capsys.readouterr().out
