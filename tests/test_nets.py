"""User networks: ``vae.VAE`` subclasses with ``build_encoder`` / ``build_decoder``, the original's
``torch_vae.TorchVAE`` and the supervised network module ``nn.NN`` / ``torch_nn.TorchNN``."""

import math
import os

import numpy as np

import pytest
import torch
from torch import nn

import serket_pyro as srk
from serket_pyro import gmm, torch_nn, torch_vae, vae
from serket_pyro import nn as srk_nn
from serket_pyro.messages import ClassProbs


class CountingEncoder(nn.Module):
    """``D - 16 - (mu, log_var)`` that counts its calls."""

    def __init__(self, D, L):
        super().__init__()
        self.fc, self.mu, self.log_var = nn.Linear(D, 16), nn.Linear(16, L), nn.Linear(16, L)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = torch.relu(self.fc(x))
        return self.mu(h), self.log_var(h)


class MyVAE(vae.VAE):
    def build_encoder(self, input_dim, latent_dim):
        self.got_dims = (input_dim, latent_dim)
        return CountingEncoder(input_dim, latent_dim)

    def build_decoder(self, input_dim, latent_dim):
        return nn.Sequential(nn.Linear(latent_dim, 16), nn.Tanh(), nn.Linear(16, input_dim))


def images(n=60, d=12, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, d))


def test_vae_subclass_networks_are_built_trained_and_used(tmp_path):
    srk.set_output_root(tmp_path)
    srk.set_seed(0)
    v = MyVAE(3, itr=4, batch_size=20)
    v.connect(srk.Observation(images()))
    v.update()
    assert v.got_dims == (12, 3)
    assert isinstance(v.encoder_.net, CountingEncoder) and isinstance(v.decoder_, nn.Sequential)
    assert v.encoder_.net.calls >= 4 * 3  # every minibatch of every epoch went through it
    before = {k: t.clone() for k, t in v.state_dict().items() if k.startswith(("encoder.", "decoder."))}
    assert "encoder.net.fc.weight" in before and "decoder.2.weight" in before
    v.update()
    after = v.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)  # all user parameters trained
    # the forward message is the user's encoder mean, the reconstruction its decoder's sigmoid
    x = torch.as_tensor(images(), dtype=torch.float32)
    with torch.no_grad():
        mu, log_var = v.encoder_.net(x)
        rec = torch.sigmoid(v.decoder_(mu))
    fwd = v.forward_msg
    assert torch.allclose(fwd.loc.float(), mu, atol=1e-6)
    assert torch.allclose(fwd.scale.float(), torch.exp(0.5 * log_var), atol=1e-6)
    assert torch.allclose(v.children[0].get_backward_msg().value.float(), rec, atol=1e-6)


def test_vae_subclass_state_round_trips_through_a_file(tmp_path):
    srk.set_output_root(tmp_path)
    srk.set_seed(1)
    v = MyVAE(3, itr=3, batch_size=20)
    v.connect(srk.Observation(images()))
    v.update()
    saved = torch.load(tmp_path / v.name / "model.pt", weights_only=True)
    w = MyVAE(3, itr=3, batch_size=20, mode="recog")
    w.connect(srk.Observation(images()))
    w.load_state_dict(saved)
    w.update()
    assert torch.equal(w.forward_msg.loc, v.forward_msg.loc)
    again = w.state_dict()
    assert sorted(again) == sorted(saved) and all(torch.equal(again[k], saved[k]) for k in saved)


def test_vae_subclass_errors_name_the_module_and_the_hook():
    class TF(vae.VAE):  # the original's TensorFlow form
        def build_encoder(self, x, latent_dim):
            raise AssertionError("never called")

        def build_decoder(self, z):
            raise AssertionError("never called")

    with pytest.raises(ValueError, match=r"module\d+_vae: TF.build_decoder\(self, z\) is the original's TensorFlow"):
        TF(2)

    class NotAModule(vae.VAE):
        def build_encoder(self, input_dim, latent_dim):
            return lambda x: (x, x)

    class WrongShape(vae.VAE):
        def build_encoder(self, input_dim, latent_dim):
            return nn.Linear(input_dim, latent_dim)  # one tensor, not (mu, log_var)

    class Broken(vae.VAE):
        def build_decoder(self, input_dim, latent_dim):
            import tensorflow as tf  # TensorFlow code left in (not installed here)

            return tf.keras.layers.Dense(input_dim)

    class ProbsOutOfRange(vae.VAE):
        decoder_output = "probs"

        def build_decoder(self, input_dim, latent_dim):
            return nn.Linear(latent_dim, input_dim)

    for cls, msg in [(NotAModule, r"build_encoder\(input_dim=12, latent_dim=2\) returned a function"),
                     (WrongShape, r"returns shape \(2, 2\) for a batch of 2; it must be an nn.Module whose "
                                  r"forward\(x: \(B, D\)\) returns \(mu, log_var\)"),
                     (Broken, r"build_decoder\(input_dim=12, latent_dim=2\) failed \((ModuleNotFound|Attribute)Error"),
                     (ProbsOutOfRange, r"outside \[0, 1\]")]:
        m = cls(2, itr=1)
        m.connect(srk.Observation(images()))
        with pytest.raises(ValueError, match=rf"{m.name}: .*{msg}"):
            m.update()
    with pytest.raises(ValueError, match="overrides build_encoder"):
        MyVAE(2, encoder=nn.Linear(2, 2))


class TorchVAEModel(torch_vae.TorchVAE):
    """The original's 2023 example networks, smaller."""

    def build_encoder(self, input_dim, latent_dim):
        self.got_input_dim = input_dim
        return CountingEncoder(input_dim[0], latent_dim)

    def build_decoder(self, input_dim, latent_dim):
        return nn.Sequential(nn.Linear(latent_dim, 16), nn.ReLU(), nn.Linear(16, input_dim[0]), nn.Sigmoid())


def test_torch_vae_takes_the_original_signature_and_shape_argument(tmp_path):
    srk.set_output_root(tmp_path)
    srk.set_seed(0)
    v = TorchVAEModel(12, 3, 1e-2, "cpu", 5)  # positional: input_dim, latent_dim, lr, device, epoch
    assert (v.itr, v.lr, v.batch_size, v.kl_weight, v.likelihood) == (5, 1e-2, None, 1.0, "bernoulli")
    v.connect(srk.Observation(images()))
    v.update()
    assert v.got_input_dim == (12,)
    # the check at build time, batch_size=None: one batch per epoch, then the posterior
    assert v.encoder_.net.calls == 1 + 5 + 1
    x = torch.as_tensor(images(), dtype=torch.float32)
    with torch.no_grad():
        rec = v.decoder_(v.encoder_.net(x)[0])  # probabilities straight from the decoder (Sigmoid)
    assert torch.allclose(v.children[0].get_backward_msg().value.float(), rec, atol=1e-6)
    cfg = v.get_config()
    assert cfg["epoch"] == 5 and cfg["RE"] == "BCE" and cfg["batch_size"] is None
    assert TorchVAEModel(**cfg).get_config() == cfg
    # the original's load_dir: the model files of the learning update, then recognition
    r = TorchVAEModel(12, 3, load_dir=os.path.join(v.output_dir, "000"))
    assert r.mode == "recog" and all(torch.equal(a, b) for a, b in zip(r.decoder_.state_dict().values(),
                                                                        v.decoder_.state_dict().values()))
    r.connect(srk.Observation(images()))
    r.update()
    torch.testing.assert_close(r.forward_msg.loc, v.forward_msg.loc)
    bad = TorchVAEModel(10, 3, epoch=1)
    bad.connect(srk.Observation(images()))
    with pytest.raises(ValueError, match=rf"{bad.name}: input_dim=10 but the data .* have D=12"):
        bad.update()
    with pytest.raises(ValueError, match="RE must be 'BCE' or 'MSE'"):
        TorchVAEModel(12, 3, RE="L1")


def test_torch_vae_mse_is_the_summed_squared_error():
    """RE="MSE": -log p(x | z) = sum_d (x_d - x_hat_d)^2 + (D/2) log(pi), the original's MSELoss(sum)."""
    v = TorchVAEModel(12, 3, RE="MSE")
    v._build(12)
    z = torch.randn(5, 3)
    x = torch.rand(5, 12)
    out = v.decoder_(z)
    x_hat = out[0]
    want = (x - x_hat).pow(2).sum(-1) + 6 * math.log(math.pi)
    assert torch.allclose(v._neg_log_lik(out, x), want, atol=1e-5)


# ----------------------------------------------------------------------------------------- NN
def toy_classes(N=240, K=3, D=4, seed=0, soft=True):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, K, N)
    A = rng.normal(size=(K, D)) * 2
    y = A[c] + 0.3 * rng.normal(size=(N, D))
    p = rng.dirichlet(np.ones(K) * 0.5, size=N) if soft else np.eye(K)[c]
    return c, p, y


def _likelihood_message(y, F, sigma, log=False):
    sq = ((y[:, None, :] - F[None]) ** 2).sum(-1)  # (N, K)
    logm = -sq / (2 * sigma ** 2)
    logm = logm - logm.max(1, keepdims=True)
    logm = logm - np.log(np.exp(logm).sum(1, keepdims=True))
    return sq, (logm if log else np.exp(logm))


def test_nn_learns_the_class_means_and_sends_the_class_likelihood(tmp_path):
    """One-hot classes: f(e_k) = the class means of y, sigma^2 = the mean squared residual per
    dimension, message softmax_k(-||y_n - f(e_k)||^2 / 2 sigma^2) (exact answers)."""
    srk.set_output_root(tmp_path)
    srk.set_seed(0)
    c, p, y = toy_classes(soft=False)
    N, K, D = p.shape[0], p.shape[1], y.shape[1]
    classes, obs = srk.Observation(ClassProbs.from_probs(p)), srk.Observation(y)
    n1 = srk_nn.NN(itr1=1500, lr=0.02, hidden=16, noise="isotropic")  # full batch; not the defaults
    n1.connect(classes, obs)
    n1.update()
    F = np.stack([y[c == k].mean(0) for k in range(K)])
    got = np.loadtxt(tmp_path / n1.name / "class_means_learn.txt")
    assert np.abs(got - F).max() < 2e-3, np.abs(got - F).max()
    sq, want = _likelihood_message(y, F, 1.0)
    sigma = math.sqrt(sq[np.arange(N), c].sum() / (N * D))
    assert n1.noise_scale_.shape == (D,) and torch.allclose(n1.noise_scale_, torch.full((D,), sigma, dtype=torch.float64), rtol=1e-3)
    _, want = _likelihood_message(y, F, sigma, log=True)
    msg = classes.get_backward_msg()
    assert isinstance(msg, ClassProbs) and msg.probs.shape == (N, K)
    assert torch.allclose(msg.probs.sum(1), torch.ones(N, dtype=torch.float64))
    assert np.allclose(msg.log_probs.numpy(), want, rtol=1e-2, atol=0.05)
    assert obs.get_backward_msgs() == {}  # nothing to the observation
    assert np.allclose(np.loadtxt(tmp_path / n1.name / "message_learn.txt"), msg.probs.numpy(), atol=1e-6)
    assert torch.allclose(n1.forward_msg.probs, msg.probs)
    # noise="diagonal" (default): sigma_d^2 = mean_n (y_nd - f(e_c_n)_d)^2, each dimension weighted by it
    classes = srk.Observation(ClassProbs.from_probs(p))
    n2 = srk_nn.NN(itr1=1500, lr=0.02, hidden=16)
    n2.connect(classes, srk.Observation(y))
    n2.update()
    sigma_d = np.sqrt(((y - F[c]) ** 2).mean(0))
    assert np.allclose(n2.noise_scale_.numpy(), sigma_d, rtol=2e-3)
    _, want = _likelihood_message(y / sigma_d, F / sigma_d, 1.0, log=True)
    assert np.allclose(classes.get_backward_msg().log_probs.numpy(), want, rtol=1e-2, atol=0.05)


def test_nn_em_fixed_point_with_soft_classes(tmp_path):
    """Soft classes p: at convergence f and sigma satisfy the EM fixed point, with the
    responsibilities r_nk proportional to p_nk N(y_n | f(e_k), sigma^2): f(e_k) = sum_n r_nk y_n /
    sum_n r_nk and sigma^2 = sum_nk r_nk ||y_n - f(e_k)||^2 / (N D) (not the same with r = p)."""
    srk.set_output_root(tmp_path)
    srk.set_seed(0)
    _, p, y = toy_classes(soft=True)
    N, D = y.shape
    n1 = srk_nn.NN(itr1=2000, lr=0.02, hidden=16, noise="isotropic")
    n1.connect(srk.Observation(ClassProbs.from_probs(p)), srk.Observation(y))
    n1.update()
    F = n1._means.numpy()
    sigma = float(n1.noise_scale_[0])
    sq, m = _likelihood_message(y, F, sigma)
    r = p * m
    r /= r.sum(1, keepdims=True)
    want_F = (r.T @ y) / r.sum(0)[:, None]
    assert np.abs(F - want_F).max() < 5e-3, np.abs(F - want_F).max()
    assert sigma == pytest.approx(math.sqrt((r * sq).sum() / (N * D)), rel=5e-3)
    naive = (p.T @ y) / p.sum(0)[:, None]  # the M-step on p alone: far from the answer
    assert np.abs(F - naive).max() > 0.1


def test_nn_poisson_learns_the_class_rates(tmp_path):
    """likelihood="poisson", one-hot classes: exp(f(e_k)) = the class means of the counts, message
    softmax_k(y_n . log(rate_k) - sum_d rate_kd) (exact answers)."""
    srk.set_output_root(tmp_path)
    srk.set_seed(0)
    rng = np.random.default_rng(2)
    N, K, D = 300, 3, 6
    c = rng.integers(0, K, N)
    rates = rng.uniform(0.5, 4.0, size=(K, D))
    y = rng.poisson(rates[c]).astype(float)
    classes = srk.Observation(ClassProbs.from_probs(np.eye(K)[c]))
    n1 = srk_nn.NN(itr1=2000, lr=0.02, hidden=16, likelihood="poisson")
    n1.connect(classes, srk.Observation(y))
    n1.update()
    want = np.stack([y[c == k].mean(0) for k in range(K)])
    got = np.exp(n1._means.numpy())
    assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()  # converged (annealed rate)
    logm = y @ np.log(want).T - want.sum(1)
    logm -= logm.max(1, keepdims=True)
    logm -= np.log(np.exp(logm).sum(1, keepdims=True))
    assert np.allclose(classes.get_backward_msg().log_probs.numpy(), logm, rtol=1e-2, atol=0.02)
    bad = srk_nn.NN(itr1=1, likelihood="poisson")
    bad.connect(srk.Observation(ClassProbs.from_probs(np.eye(K)[c])), srk.Observation(y - 1))
    with pytest.raises(ValueError, match=rf"{bad.name}: likelihood='poisson' needs non-negative counts"):
        bad.update()
    with pytest.raises(ValueError, match="backward='original' .* needs likelihood='gaussian'"):
        srk_nn.NN(backward="original", likelihood="poisson")


def test_nn_without_a_basis_sends_no_information(tmp_path):
    """An untrained network (far from the data) explains y worse than one distribution for all
    points: the message is flat, and the GMM's classes are those it finds without the NN."""
    srk.set_output_root(tmp_path)

    class Far(srk_nn.NN):
        def build_model(self, input_dim, output_dim):
            net = nn.Linear(input_dim, output_dim)
            nn.init.normal_(net.weight, std=3.0)
            return net

    c, p, y = toy_classes(soft=False)
    classes = srk.Observation(ClassProbs.from_probs(p))
    n1 = Far(itr1=1, likelihood="gaussian")
    n1.connect(classes, srk.Observation(y))
    srk.set_seed(0)
    n1.update()
    assert n1.metrics_["log_evidence_ratio"] < 0
    lp = classes.get_backward_msg().log_probs
    assert torch.equal(lp, torch.full_like(lp, -math.log(3)))
    trained = srk_nn.NN(itr1=300, lr=0.02)
    trained.connect(srk.Observation(ClassProbs.from_probs(p)), srk.Observation(y))
    trained.update()
    assert trained.metrics_["log_evidence_ratio"] > 100


def test_nn_state_round_trip_and_recognition(tmp_path):
    srk.set_output_root(tmp_path)
    srk.set_seed(0)
    _, p, y = toy_classes(soft=False)
    n1 = srk_nn.NN(itr1=50, batch_size1=64, lr=0.02)
    c1 = srk.Observation(ClassProbs.from_probs(p))
    n1.connect(c1, srk.Observation(y))
    n1.update()
    saved = torch.load(tmp_path / n1.name / "model.pt", weights_only=True)
    n2 = srk_nn.NN(mode="recog")
    c2 = srk.Observation(ClassProbs.from_probs(p))
    n2.connect(c2, srk.Observation(y))
    n2.load_state_dict(saved)
    n2.update()
    assert torch.allclose(c2.get_backward_msg().probs, c1.get_backward_msg().probs, atol=1e-12)
    again = n2.state_dict()
    assert sorted(again) == sorted(saved) and all(torch.equal(again[k], saved[k]) for k in saved)
    fresh = srk_nn.NN(mode="recog")
    fresh.connect(srk.Observation(ClassProbs.from_probs(p)), srk.Observation(y))
    with pytest.raises(ValueError, match=rf"{fresh.name}: mode='recog' needs a trained network"):
        fresh.update()


def test_torch_nn_user_network_and_the_original_message():
    """TorchNN's signature and build_model; backward="original" sends softmax(w) rows."""

    class Model(torch_nn.TorchNN):
        def build_model(self, input_dim, output_dim):
            self.got = (input_dim, output_dim)
            return nn.Sequential(nn.Linear(input_dim, 8), nn.ReLU(), nn.Linear(8, output_dim))

    _, p, y = toy_classes(N=60, soft=False)
    srk.set_seed(0)
    n1 = Model(20, 20, itr1=5, itr2=5)  # batch_size1, batch_size2 first, as the original
    assert (n1.batch_size1, n1.batch_size2, n1.itr1, n1.itr2, n1.device.type) == (20, 20, 5, 5, "cpu")
    c = srk.Observation(ClassProbs.from_probs(p))
    n1.connect(c, srk.Observation(y))
    n1.update()
    assert n1.got == (3, 4) and isinstance(n1.network_, nn.Sequential)
    assert c.get_backward_msg().probs.shape == (60, 3)
    o = Model(20, 20, itr1=5, itr2=5)
    o.backward = "original"
    c2 = srk.Observation(ClassProbs.from_probs(p))
    o.connect(c2, srk.Observation(y))
    o.update()
    probs = c2.get_backward_msg().probs
    assert probs.shape == (60, 3) and torch.allclose(probs.sum(1), torch.ones(60, dtype=torch.float64))
    assert all(q.requires_grad for q in o.network_.parameters())
    # the original's load_dir: the model files of the learning update, then recognition
    r = Model(20, 20, load_dir=o.output_dir)
    assert r.mode == "recog"
    assert all(torch.equal(a, b) for a, b in zip(r.network_.state_dict().values(), o.network_.state_dict().values()))
    with pytest.raises(ValueError, match="no model in 'm'"):
        Model(20, 20, load_dir="m")


def test_nn_errors_name_the_module():
    class TF(srk_nn.NN):
        def model(self, x, y, input_dim, output_dim):
            raise AssertionError("never called")

    with pytest.raises(ValueError, match=r"module\d+_nn: TF.model\(self, x, y, input_dim, output_dim\) is the "
                                         r"original's TensorFlow form.*build_model\(self, input_dim, output_dim\)"):
        TF()

    class Wrong(srk_nn.NN):
        def build_model(self, input_dim, output_dim):
            return nn.Linear(input_dim, output_dim + 1)

    _, p, y = toy_classes(N=30)
    m = Wrong(itr1=1)
    m.connect(srk.Observation(ClassProbs.from_probs(p)), srk.Observation(y))
    with pytest.raises(ValueError, match=rf"{m.name}: the network of Wrong.build_model\(input_dim=3, output_dim=4\) "
                                         r"returns \(3, 5\)"):
        m.update()
    m = srk_nn.NN(itr1=1)
    m.connect(srk.Observation(y), srk.Observation(y))
    with pytest.raises(ValueError, match=rf"{m.name}: the first child .* must send class probabilities"):
        m.update()


def test_nn_gives_the_gmm_the_second_modality(tmp_path):
    """A GMM on overlapping data x, with the NN from its classes to well separated data y: the
    class likelihood of y makes the GMM's classes better than without the NN (same seed)."""
    srk.set_output_root(tmp_path)
    rng = np.random.default_rng(3)
    N, K = 300, 3
    c = np.arange(N) % K
    x = np.array([[0.0, 0.0], [1.2, 0.0], [0.6, 1.0]])[c] + 0.6 * rng.normal(size=(N, 2))
    y = 3.0 * np.eye(K)[c] + 0.5 * rng.normal(size=(N, K))
    acc = {}
    for with_nn in (False, True):
        srk.reset_module_counter()
        srk.set_seed(0)
        g = gmm.GMM(K, itr=30, category=c, n_init=2)
        g.connect(srk.Observation(x))
        mods = [g]
        if with_nn:
            n1 = srk_nn.NN(itr1=200, lr=0.02)
            n1.connect(g, srk.Observation(y))
            mods.append(n1)
        for _ in range(3):
            for m in mods:
                m.update()
        acc[with_nn] = g.metrics_["accuracy"]
    assert acc[True] > 0.97 and acc[True] > acc[False] + 0.1, acc
