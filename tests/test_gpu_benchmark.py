"""benchmarks/gpu.py: the GPU table's pipeline, checked on CPU at tiny sizes (no GPU needed)."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import gpu  # noqa: E402


def test_joint_row_is_the_readme_recipe():
    """The full-MNIST row runs the README's full-MNIST joint recipe, flag for flag."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    m = re.search(r"# full MNIST\n\s+python benchmarks/joint.py (.*?)\n\s+#", text, re.S)
    assert m, "README lost its full-MNIST joint command"
    readme = m.group(1).replace("\\\n", " ").split()
    readme = readme[:readme.index("--seeds")]                 # the table runs one seed of it
    assert gpu.JOINT_RECIPE == readme
    rows = {name: cmd for name, cmd, _, _ in gpu.rows("cuda", False, 0)}
    assert rows["joint full MNIST"][1:] == [*gpu.JOINT_RECIPE, "--device", "cuda", "--seeds", "0"]
    assert "--systems" in rows["vae_gmm_mm"] and "--n" not in rows["vae_gmm_mm"]


@pytest.mark.slow
def test_gpu_table_runs_on_cpu_at_tiny_sizes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu.py"), "--device", "cpu", "--tiny"],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("| ") and not ln.startswith("| row")]
    assert [ln.split("|")[1].strip() for ln in lines] == ["vae_gmm_mm", "vae_gmm_mlda_mm", "joint full MNIST"]
    for ln in lines:
        sec, acc = float(ln.split("|")[2]), float(ln.split("|")[4])
        assert sec > 0 and 0 <= acc <= 1
