"""The serket-pyro command: run --resume after a real kill, run --save / recog / report."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from serket_pyro import cli

TINY = ["--n", "300", "--epochs", "2", "--no-progress"]


def _run_cmd(args, env_data):
    env = dict(os.environ, SERKET_PYRO_DATA=env_data, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "serket_pyro.app.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_killed_run_resumes_to_the_same_result(tmp_path, data_dir):
    """SIGKILL a real `serket-pyro run vae_gmm_mm` after its first checkpoint, resume it, and
    compare with an uninterrupted run with the same seed."""
    n_iter = 4
    args = ["run", "vae_gmm_mm", *TINY, "--iterations", str(n_iter), "--seed", "3", "--data-dir", data_dir]
    ck, out = tmp_path / "ck", tmp_path / "killed"
    proc = _run_cmd([*args, "--output", str(out), "--checkpoint-dir", str(ck)], data_dir)
    first = ck / "iter_000" / "checkpoint.json"
    t0 = time.monotonic()
    while not first.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() - t0 < 120, "no checkpoint after 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(d for d in os.listdir(ck) if (ck / d / "checkpoint.json").exists())
    assert proc.returncode == -signal.SIGKILL
    assert len(done) < n_iter, f"the run finished before it was killed ({done})"

    rc = cli.main([*args, "--output", str(out), "--checkpoint-dir", str(ck), "--resume"])
    assert rc == 0
    clean = _run_cmd([*args, "--output", str(tmp_path / "clean"), "--checkpoint-dir", str(tmp_path / "ck2")], data_dir)
    assert clean.wait() == 0, clean.stderr.read().decode()[-2000:]
    for f in ("module002_gmm/Pdz_learn.txt", "module002_gmm/means_learn.txt", "module003_mm/msg_learn.txt",
              "module003_mm/trans_prob_learn.txt"):
        np.testing.assert_array_equal(np.loadtxt(out / f), np.loadtxt(tmp_path / "clean" / f))
    np.testing.assert_array_equal(np.loadtxt(out / "module001_vae" / "z_learn.txt"),
                                  np.loadtxt(tmp_path / "clean" / "module001_vae" / "z_learn.txt"))
    # the metrics history of the last checkpoint (metrics.jsonl may miss the line of an iteration
    # whose checkpoint was written just before the kill: driver.fit appends it after the checkpoint)
    last = f"iter_{n_iter - 1:03d}"
    hist = json.loads((ck / last / "checkpoint.json").read_text())["history"]
    ref = json.loads((tmp_path / "ck2" / last / "checkpoint.json").read_text())["history"]
    assert [r["iteration"] for r in hist] == list(range(n_iter))
    for a, b in zip(hist, ref):
        assert a["module002_gmm"] == b["module002_gmm"] and a["module003_mm"] == b["module003_mm"]
    # the resumed run kept the killed run's id (its run.json, every record and metrics file)
    run_id = json.loads((ck / "iter_000" / "checkpoint.json").read_text())["run_id"]
    assert json.loads((out / "run.json").read_text())["run_id"] == run_id
    assert {r["run_id"] for r in hist} == {run_id}
    assert json.loads((out / "module002_gmm" / "metrics_learn.json").read_text())["run_id"] == run_id
    assert json.loads((tmp_path / "clean" / "run.json").read_text())["run_id"] != run_id


def test_a_shorter_run_into_the_same_folder_leaves_no_stale_iterations(tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    args = ["run", "vae_gmm", *TINY, "--data-dir", data_dir, "--output", str(out)]
    assert cli.main([*args, "--iterations", "3"]) == 0
    first = json.loads((out / "run.json").read_text())["run_id"]
    assert sorted(os.listdir(out / "module002_gmm" / "002")) and (out / "module001_vae" / "002").is_dir()
    (out / "module002_gmm" / "notes").mkdir()  # not an iteration folder: stays
    assert cli.main([*args, "--iterations", "2", "--seed", "1"]) == 0
    second = json.loads((out / "run.json").read_text())["run_id"]
    assert second != first
    for m in ("module001_vae", "module002_gmm"):
        assert sorted(d for d in os.listdir(out / m) if d.isdigit()) == ["000", "001"], m
    assert (out / "module002_gmm" / "notes").is_dir()
    for it in ("000", "001"):
        assert json.loads((out / "module002_gmm" / it / "metrics_learn.json").read_text())["run_id"] == second
    capsys.readouterr()
    assert cli.main(["report", str(out)]) == 0
    rep = capsys.readouterr().out
    assert f"run {second}" in rep
    row = next(ln for ln in rep.splitlines() if ln.startswith("module002_gmm"))
    assert row.split()[1] == "2"  # two iterations, not three
    # a metrics file of another run (copied in by hand) is left out of the plots' history
    from serket_pyro.app import plots

    (out / "module002_gmm" / "007").mkdir()
    (out / "module002_gmm" / "007" / "metrics_learn.json").write_text('{"accuracy": 0.5, "run_id": "other"}')
    hist = plots.collect_metrics(out, "learn", None, second)
    assert [it for it, _ in hist["module002_gmm"]] == [0, 1]


def test_resume_needs_checkpoint_dir(tmp_path, data_dir, capsys):
    rc = cli.main(["run", "vae_gmm", *TINY, "--iterations", "1", "--resume", "--data-dir", data_dir,
                   "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "--resume needs --checkpoint-dir" in err and len(err.strip().splitlines()) == 1


def test_run_save_recog_report(tmp_path, data_dir, capsys):
    saved = tmp_path / "saved"
    assert cli.main(["run", "vae_gmm_mlda_mm", *TINY, "--iterations", "2", "--data-dir", data_dir,
                     "--output", str(tmp_path / "train"), "--checkpoint-dir", str(tmp_path / "ck"),
                     "--save", str(saved)]) == 0
    assert (saved / "graph.json").exists() and (saved / "state.pt").exists()
    capsys.readouterr()
    # images alone (speech missing for MLDA), MNIST test set
    assert cli.main(["recog", str(saved), "--data", "mnist-test", "--n", "200", "--data-dir", data_dir,
                     "--output", str(tmp_path / "rec"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "missing modalities ['obs2']" in out and "class_recog.txt" in out
    p = np.loadtxt(tmp_path / "rec" / "module004_mlda" / "Pdz_recog.txt")
    assert p.shape == (200, 10)
    assert not (tmp_path / "rec" / "module004_mlda" / "Pdz_learn.txt").exists()
    # points arranged by their true labels: every accuracy line says the score is not fair
    assert cli.main(["recog", str(saved), "--data", "mnist-test", "--n", "200", "--data-dir", data_dir,
                     "--order", "cyclic", "--output", str(tmp_path / "rec_cyc"), "--no-progress"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "0." in ln and "module00" in ln]
    assert lines and all("not a fair score" in ln or "NOT A FAIR SCORE" in ln for ln in lines), lines
    # report of the training run: PNGs and a table
    assert cli.main(["report", str(tmp_path / "train")]) == 0
    out = capsys.readouterr().out
    assert "module004_mlda" in out and "<- result" in out
    pngs = sorted(os.listdir(tmp_path / "train" / "report"))
    # every scored module gets a confusion matrix; the VAE's loss over both iterations' epochs
    assert pngs == ["confusion_module003_gmm.png", "confusion_module004_mlda.png", "latent_module002_vae.png",
                    "loss_module002_vae.png", "metrics.png", "objectives.png",
                    "reconstructions_module002_vae.png", "transitions_module005_mm.png"]
    with open(tmp_path / "train" / "module003_gmm" / "001" / "metrics_learn.json") as f:
        assert {"accuracy", "objective"} <= set(json.load(f))  # scores and the module's own objective
    for f in pngs:
        assert (tmp_path / "train" / "report" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # report of the recognition run, and of the saved graph (its training outputs)
    assert cli.main(["report", str(tmp_path / "rec"), "--out", str(tmp_path / "rr")]) == 0
    assert "recog files" in capsys.readouterr().out
    assert (tmp_path / "rr" / "confusion_module004_mlda.png").exists()
    assert cli.main(["report", str(saved), "--out", str(tmp_path / "rs")]) == 0
    assert "learn files" in capsys.readouterr().out


def test_recog_and_report_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["recog", str(tmp_path), "--data", "x.npy"]) == 2
    err = capsys.readouterr().err
    assert "graph.json not found" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "graph.json").write_text("{not json")
    assert cli.main(["recog", str(tmp_path / "g"), "--data", "x.npy"]) == 2
    assert "graph.json is corrupt" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "no module%03d_*" in capsys.readouterr().err


def test_pca_matches_svd_and_plots_are_pngs(tmp_path):
    from serket_pyro import plots

    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 5)) @ np.diag([5.0, 2.0, 0.5, 0.2, 0.1])
    xy = plots.pca_2d(z)
    zc = z - z.mean(0)
    ref = zc @ np.linalg.svd(zc, full_matrices=False)[2][:2].T
    np.testing.assert_allclose(np.abs(xy), np.abs(ref), rtol=1e-6, atol=1e-8)  # up to the sign of each axis
    true = np.repeat(np.arange(3), 10)
    pred = (true + 1) % 3  # a relabelling: accuracy 1 after the best mapping
    paths = [plots.plot_confusion(true, pred, tmp_path / "c.png"),
             plots.plot_latents(z, rng.integers(0, 3, 200), tmp_path / "l.png"),
             plots.plot_transitions(np.eye(3), tmp_path / "t.png"),
             plots.plot_reconstructions(rng.random((4, 784)), rng.random((4, 784)), tmp_path / "r.png"),
             plots.plot_metrics({"m": [(0, {"accuracy": 0.5, "ari": 0.1}), (1, {"accuracy": 0.7, "ari": 0.3})]},
                                tmp_path / "m.png")]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert plots.plot_metrics({}, tmp_path / "none.png") is None


def test_transitions_are_ordered_by_the_childs_class_mapping(tmp_path):
    from serket_pyro import plots

    # states 0..4 visit the true classes in the cycle 0 -> 1 -> ... -> 4 -> 0, but the child named
    # class c "state perm[c]": drawn in state order the cycle is scattered
    perm = np.array([3, 0, 4, 1, 2])
    A = np.zeros((5, 5))
    A[perm, perm[(np.arange(5) + 1) % 5]] = 1.0
    mapping = {int(perm[c]): c for c in range(5)}  # state -> true class (best_mapping's form)
    order, ticks = plots.state_order(mapping, 5)
    np.testing.assert_array_equal(order, perm)
    np.testing.assert_array_equal(A[np.ix_(order, order)], np.roll(np.eye(5), 1, axis=1))
    assert ticks[0] == "0 (s3)"
    # an unmatched state goes last, marked "-"
    order, ticks = plots.state_order({0: 1, 1: -1, 2: 0}, 3)
    assert list(order) == [2, 0, 1] and ticks == ["0 (s2)", "1 (s0)", "- (s1)"]
    assert plots.plot_transitions(A, tmp_path / "t.png", order=perm,
                                  ticks=[str(c) for c in range(5)]).endswith("t.png")


def test_loss_curve_joins_the_iterations(tmp_path):
    from serket_pyro.app import plots

    for it, losses in enumerate(([5.0, 4.0, 3.0], [3.5, 2.5], [2.0])):
        (tmp_path / f"{it:03d}").mkdir()
        np.savetxt(tmp_path / f"{it:03d}" / "loss_learn.txt", losses)
    loss, starts = plots._losses(tmp_path)
    np.testing.assert_array_equal(loss, [5.0, 4.0, 3.0, 3.5, 2.5, 2.0])
    assert starts == [3, 5]
    assert plots._losses(tmp_path / "000") is None


@pytest.mark.slow  # tests/test_examples.py::test_recognition_example_runs runs the same example in the default suite
def test_recognition_example_runs_tiny(tmp_path, data_dir, capsys):
    import argparse
    import importlib.util

    from serket_pyro.app.runner import add_tutorial_arguments

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "recognition.py")
    spec = importlib.util.spec_from_file_location("example_recognition", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    parser = add_tutorial_arguments(argparse.ArgumentParser())
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--recog-iterations", type=int, default=2)
    args = parser.parse_args(["--n", "200", "--epochs", "1", "--iterations", "1", "--n-test", "60",
                              "--recog-iterations", "1", "--no-progress", "--data-dir", data_dir,
                              "--output", str(tmp_path)])
    scores = mod.main(args)
    out = capsys.readouterr().out
    assert "images (given order, no MM)" in out and "images+speech" in out
    assert set(scores) >= {"images given", "images+speech given", "images cyclic"}
    # measured (seed 0): 0.55-0.58 in every setting, 0.595 on the training points; random classes
    # on these 60 points score 0.30 (at most 0.37 in 200 draws)
    assert all(0.45 <= v["mlda"] <= 1 for k, v in scores.items() if isinstance(v, dict)), scores
    assert (tmp_path / "saved_graph" / "graph.json").exists()
    assert (tmp_path / "recog_given_images" / "module004_mlda" / "class_recog.txt").exists()


# ------------------------------------------------------------- user errors: exit 2, whole message
@pytest.mark.parametrize("argv", [["run", "vae_gmm", "--n", "-5"], ["run", "vae_gmm", "--iterations", "0"],
                                  ["run", "vae_gmm", "--iterations", "-1"], ["run", "vae_gmm", "--threads", "0"],
                                  ["run", "vae_gmm", "--epochs", "0"], ["recog", "g", "--data", "x.npy", "--n", "-5"],
                                  ["recog", "g", "--data", "x.npy", "--iterations", "0"],
                                  ["recog", "g", "--data", "x.npy", "--threads", "0"]])
def test_counts_must_be_positive(argv, capsys):
    base = ["--n", "100", "--epochs", "1", "--iterations", "1", "--no-progress"] if argv[0] == "run" else []
    assert cli.main(argv[:2] + base + argv[2:]) == 2  # the flag under test comes last and wins
    err = capsys.readouterr().err
    assert err.startswith("serket-pyro: error: argument --") and "must be an integer >= 1" in err


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "nonsense"])
def test_unavailable_device_is_a_user_error(device, tmp_path, data_dir, capsys):
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has CUDA")
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = cli.main(["run", "vae_gmm", *TINY, "--iterations", "1", "--device", device, "--data-dir", data_dir,
                   "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and f"--device {device}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_explicit_data_dir_without_the_file_prints_the_whole_advice(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = cli.main(["run", "vae_gmm", "--n", "100", "--epochs", "1", "--iterations", "1", "--no-progress",
                   "--data-dir", str(tmp_path / "empty"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2, "fell back to other data"
    lines = err.strip().splitlines()
    assert "Looked in:" in lines[0] and len(lines) > 2  # the advice after "Looked in:" is printed too
    assert any(str(tmp_path / "empty" / "serket_tutorial.npz") in ln for ln in lines[1:])
    assert not (tmp_path / "out").exists()


def test_recog_tutorial_on_a_one_observation_graph(tmp_path, data_dir, capsys):
    saved = tmp_path / "saved"
    assert cli.main(["run", "vae_gmm", "--n", "100", "--epochs", "1", "--batch-size", "50", "--iterations", "1",
                     "--no-progress", "--data-dir", data_dir, "--output", str(tmp_path / "train"),
                     "--save", str(saved)]) == 0
    capsys.readouterr()
    assert cli.main(["recog", str(saved), "--data", "tutorial", "--n", "50", "--iterations", "1",
                     "--data-dir", data_dir, "--output", str(tmp_path / "rec"), "--no-progress"]) == 0
    assert np.loadtxt(tmp_path / "rec" / "module002_gmm" / "class_recog.txt").shape == (50,)
    assert cli.main(["recog", str(saved), "--data", "tutorial", "--data", "mnist-test", "--data-dir", data_dir,
                     "--output", str(tmp_path / "rec2"), "--no-progress"]) == 2
    assert "every observation of the graph ['obs'] already has data" in capsys.readouterr().err


def test_run_with_our_speech_saves_the_codebooks_and_recog_takes_raw_speech(tmp_path, data_dir, capsys):
    """--speech ours: the HAC codebooks are part of the saved graph; recog turns new MFCC frames
    (an .npz) and wav files into counts with them."""
    import wave

    import serket_pyro as srk
    from serket_pyro.datasets import load_spoken_arabic_digit, load_tutorial_speech
    from serket_pyro.modules.hac import HACFeatureExtractor

    saved = tmp_path / "saved"
    assert cli.main(["run", "vae_gmm_mlda", "--speech", "ours", "--n", "100", "--epochs", "1", "--iterations", "1",
                     "--no-progress", "--data-dir", data_dir, "--output", str(tmp_path / "train"),
                     "--save", str(saved)]) == 0
    info = json.loads((saved / "graph.json").read_text())
    hac = next(e for e in info["modules"] if e["class"].endswith("HACFeatureExtractor"))
    assert hac["observation"]["input"] == "speech" and hac["config"]["ks"] == [20, 20, 20]
    # the saved codebooks are the training run's: counts of the training speech are reproduced
    tut = load_tutorial_speech(root=data_dir)
    fresh = HACFeatureExtractor(tut.utterances[:100], [20, 20, 20], [5, 2], seed=0)
    srk.reset_module_counter()
    s = srk.load_graph(saved, {"obs1": tut.images[:100], "obs2": tut.utterances[:100]}, mode="recog",
                       output_root=tmp_path / "chk")
    np.testing.assert_array_equal(np.asarray(s.modules["obs2"].forward_msg), np.asarray(fresh.forward_msg))
    # new speakers' MFCC frames in an .npz, images in an .npy
    te = load_spoken_arabic_digit("test", root=data_dir)
    utt = te.utterances()[:20]
    np.savez(tmp_path / "speech.npz", frames=np.concatenate(utt), lengths=[len(u) for u in utt])
    np.save(tmp_path / "images.npy", tut.images[:20])
    np.savetxt(tmp_path / "cat.txt", te.digit[:20], fmt="%d")
    capsys.readouterr()
    assert cli.main(["recog", str(saved), "--data", f"obs1={tmp_path / 'images.npy'}", "--data",
                     f"obs2={tmp_path / 'speech.npz'}", "--category", str(tmp_path / "cat.txt"),
                     "--output", str(tmp_path / "rec"), "--no-progress"]) == 0
    mlda = next(p for p in (tmp_path / "rec").iterdir() if p.name.endswith("_mlda"))
    assert np.loadtxt(mlda / "Pdz_recog.txt").shape == (20, 10)
    # wav files in a folder (two utterances of a sine and of noise, 11,025 Hz)
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        x = 8000 * np.sin(np.arange(6000) * 0.05 * (i + 1)) + rng.normal(size=6000) * 300
        with wave.open(str(wavs / f"{i}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(11025)
            w.writeframes(x.astype("<i2").tobytes())
    np.save(tmp_path / "images2.npy", tut.images[:2])
    assert cli.main(["recog", str(saved), "--data", f"obs1={tmp_path / 'images2.npy'}", "--data",
                     f"obs2={wavs}", "--output", str(tmp_path / "rec2"), "--no-progress"]) == 0
    mlda = next(p for p in (tmp_path / "rec2").iterdir() if p.name.endswith("_mlda"))
    assert np.loadtxt(mlda / "Pdz_recog.txt").shape == (2, 10)
    # speech that is neither: one clear line
    np.save(tmp_path / "bad.npy", np.zeros((2, 2400)))
    assert cli.main(["recog", str(saved), "--data", f"obs1={tmp_path / 'images2.npy'}", "--data",
                     f"obs2={tmp_path / 'bad.npy'}", "--output", str(tmp_path / "rec3")]) == 2
    assert "speech must be a folder of .wav files" in capsys.readouterr().err


def test_run_on_the_users_own_data(tmp_path, data_dir, capsys):
    """`serket-pyro run MODEL --data ... --category ...`: any files of the right shapes, checked
    before anything is written."""
    from serket_pyro import datasets

    d = datasets.load_tutorial(root=data_dir)
    x = (np.asarray(d.images[:120], dtype=np.float64).reshape(120, -1))
    x8 = np.round(x * 255 if x.max() <= 1 else x).astype(np.uint8)
    np.save(tmp_path / "x.npy", x8)
    np.savetxt(tmp_path / "s.txt", np.asarray(d.hac[:120]), fmt="%d")
    np.savetxt(tmp_path / "y.txt", np.asarray(d.category[:120]), fmt="%d")
    base = ["run", "vae_gmm_mlda", "--epochs", "2", "--iterations", "1", "--no-progress"]
    assert cli.main([*base, "--data", str(tmp_path / "x.npy"), "--data", str(tmp_path / "s.txt"),
                     "--category", str(tmp_path / "y.txt"), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "x.npy, s.txt" in out and "module004_mlda" in out and "empty" in out
    assert np.loadtxt(tmp_path / "out" / "module004_mlda" / "Pdz_learn.txt").shape == (120, 10)
    # without labels: classes, no scores
    assert cli.main(["run", "vae_gmm", "--epochs", "2", "--iterations", "1", "--no-progress",
                     "--data", str(tmp_path / "x.npy"), "--output", str(tmp_path / "nolab")]) == 0
    assert not (tmp_path / "nolab" / "module002_gmm" / "acc_learn.txt").exists()
    capsys.readouterr()
    # errors: exit 2, one message, nothing written
    np.save(tmp_path / "wide.npy", np.random.default_rng(0).random((50, 20)))
    np.save(tmp_path / "neg.npy", -np.ones((50, 16)))
    np.save(tmp_path / "three.npy", np.zeros((2, 3, 4, 5)))
    cases = [(["--data", str(tmp_path / "wide.npy")], "--no-deskew"),
             (["--data", str(tmp_path / "neg.npy"), "--no-deskew"], "in [0, 1]"),
             (["--data", str(tmp_path / "three.npy")], "2-D array"),
             (["--data", str(tmp_path / "x.npy"), "--category", str(tmp_path / "s.txt")], "integer labels"),
             (["--data", str(tmp_path / "nothere.npy")], "no such file"),
             (["--category", str(tmp_path / "y.txt")], "--category goes with --data")]
    for extra, msg in cases:
        rc = cli.main(["run", "vae_gmm", "--epochs", "1", "--iterations", "1", "--output", str(tmp_path / "bad"),
                       *extra])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err, (extra, err)
    assert not (tmp_path / "bad").exists()
    rc = cli.main([*base, "--data", str(tmp_path / "x.npy"), "--output", str(tmp_path / "bad")])
    assert rc == 2 and "second --data file of counts" in capsys.readouterr().err


def test_user_data_block_of_a_data_parallel_run(tmp_path, monkeypatch):
    """load_user_inputs(rows=...): a process of a data-parallel run gets only its block of the
    images and speech (a .npy memory-mapped, checked in chunks), decided on every row: the 8-bit
    scaling from the whole file, a NaN outside the block still refused; the labels whole."""
    from serket_pyro.app import runner

    monkeypatch.setattr(runner, "_CHECK_ROWS", 7)  # several chunks
    rng = np.random.default_rng(0)
    img = rng.integers(0, 2, (40, 16)).astype(np.float64)
    img[5, 0] = 255.0  # only the first block shows that the pixels are 8-bit
    speech = rng.integers(0, 5, (40, 6))
    np.save(tmp_path / "img.npy", img)
    np.save(tmp_path / "sp.npy", speech)
    np.save(tmp_path / "lab.npy", np.arange(40) % 4)
    specs = [str(tmp_path / "img.npy"), str(tmp_path / "sp.npy")]
    im, sp, cat, _ = runner.load_user_inputs(specs, str(tmp_path / "lab.npy"), n=30, deskew=True,
                                             rows=lambda n: slice(n // 2, n))
    np.testing.assert_array_equal(im, (img[15:30] / 255.0).astype(np.float32))
    np.testing.assert_array_equal(sp, speech[15:30])
    assert len(cat) == 30
    whole, _, _, _ = runner.load_user_inputs(specs, None, deskew=True)
    np.testing.assert_array_equal(whole[15:30], (img[15:30] / 255.0).astype(np.float32))
    img[2, 3] = np.nan
    np.save(tmp_path / "img.npy", img)
    with pytest.raises(ValueError, match="holds NaN"):
        runner.load_user_inputs(specs, None, deskew=True, rows=lambda n: slice(n // 2, n))
