"""Speed of the Markov model: one ``update()`` (exact forward-backward EM and the original rule),
forward-backward alone (numpy vs torch), and Pyro's own inference on the same chain.

Run::

    python benchmarks/mm_speed.py                # N = 3000, K = 10, as the Serket tutorials
    python benchmarks/mm_speed.py --n 3000 --k 10 --repeats 5 --pyro-n 50 100 200

The evidence is the cyclic sequence of the tutorials (classes 0..K-1, 0, ...) reported correctly
with probability 0.65 and otherwise a confidently wrong class (probability 0.99), as a GMM does.
Prints one table (median wall-clock seconds over ``--repeats``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from functools import partial

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate

import serket_pyro as srk
from serket_pyro.ops.forward_backward import forward_backward, forward_backward_torch
from serket_pyro.messages import ClassProbs
from serket_pyro.modules.mm import MarkovModel, markov_model
from timing import time_calls


def cyclic_evidence(n, k, acc=0.65, conf=0.99, seed=0):
    rng = np.random.default_rng(seed)
    z = np.arange(n) % k
    rep = z.copy()
    wrong = rng.random(n) > acc
    rep[wrong] = (z[wrong] + rng.integers(1, k, wrong.sum())) % k
    p = np.full((n, k), (1 - conf) / (k - 1))
    p[np.arange(n), rep] = conf
    return z, p


def timeit(fn, repeats):
    fn()                                                                    # warm-up
    return statistics.median(time_calls(fn, repeats))


def main(args=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="time steps (data points)")
    parser.add_argument("--k", type=int, default=10, help="classes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pyro-n", type=int, nargs="*", default=[50, 100, 200],
                        help="chain lengths for Pyro's TraceEnum_ELBO (sequential pyro.markov)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-root", default=None, help="where the modules write (default a temp dir)")
    a = parser.parse_args(args)
    torch.set_num_threads(a.threads)
    n, k = a.n, a.k
    z, p = cyclic_evidence(n, k)
    lp = np.log(p)
    rng = np.random.default_rng(1)
    A = rng.dirichlet(np.ones(k), size=k)
    li, lt = np.full(k, -np.log(k)), np.log(A)
    rows = []

    def row(what, n_, sec, note=""):
        rows.append((what, n_, sec, note))

    # forward-backward alone
    row("forward_backward numpy+LAPACK (chunks of 256)", n, timeit(lambda: forward_backward(li, lt, lp), a.repeats))
    row("forward_backward numpy (rescale every step)", n,
        timeit(lambda: forward_backward(li, lt, lp, rescale_every=1), a.repeats))
    tli, tlt, tlp = (torch.from_numpy(x) for x in (li, lt, lp))
    row("forward_backward torch float64 (every step)", n,
        timeit(lambda: forward_backward_torch(tli, tlt, tlp), a.repeats))
    fli, flt, flp = tli.float(), tlt.float(), tlp.float()
    row("forward_backward torch float32 (every step)", n,
        timeit(lambda: forward_backward_torch(fli, flt, flp), a.repeats))

    # Pyro's vectorised HMM (parallel scan; log-likelihood only, no marginals or messages)
    obs_dist = dist.Delta(torch.zeros(n, k, dtype=torch.float64), log_density=tlp)
    hmm = dist.DiscreteHMM(tli, tlt, obs_dist)
    value = torch.zeros(n, dtype=torch.float64)
    # DiscreteHMM's initial distribution is that of z_{-1}: z_0 is one transition later
    ll_ref = forward_backward(np.log(np.exp(li) @ A), lt, lp).log_likelihood
    ll_hmm = float(hmm.log_prob(value))
    row("pyro DiscreteHMM.log_prob (likelihood only)", n, timeit(lambda: hmm.log_prob(value), a.repeats),
        f"|dll| = {abs(ll_hmm - ll_ref):.1e}")

    # Pyro TraceEnum_ELBO on the sequential submodel (likelihood only)
    At = torch.from_numpy(A)
    for m_ in a.pyro_n:
        model = config_enumerate(pyro.poutine.condition(markov_model, data={"trans_prob": At}), default="parallel")
        elbo = TraceEnum_ELBO(max_plate_nesting=1)
        ev = tlp[:m_]
        sec = timeit(partial(elbo.loss, model, lambda *x, **y: None, ev, 0.1, None, 0.0), 1)
        fb = timeit(partial(forward_backward, li, lt, lp[:m_]), a.repeats)
        row("pyro TraceEnum_ELBO.loss (likelihood only)", m_, sec, f"numpy FB {fb * 1e3:.2f} ms: x{sec / fb:.0f}")

    # one module update on the tutorial-sized chain
    root = a.output_root or tempfile.mkdtemp(prefix="mm_speed_")

    def update(**kw):
        srk.reset_module_counter()
        obs = srk.Observation(ClassProbs.from_probs(p))
        m = MarkovModel(output_root=root, **kw)
        m.connect(obs)
        m.update()
        return obs, m

    for kw, label in (({}, "MarkovModel.update forward_backward (defaults)"),
                      ({"evidence_noise": 0.0}, "MarkovModel.update forward_backward eps=0"),
                      ({"method": "original"}, "MarkovModel.update original (100 samples)")):
        sec = timeit(partial(update, **kw), a.repeats)
        obs, m = update(**kw)
        acc = ((obs.get_backward_msg().log_probs.numpy() + lp).argmax(1) == z).mean()
        row(label, n, sec, f"EM iters {m.n_em_iter_}, acc(msg*evidence) {acc:.3f}")

    # a later update: EM from the previous matrix and from the uniform one (restart=True)
    obs, m = update()

    def again():
        m.update()

    sec = timeit(again, a.repeats)
    row("MarkovModel.update, later update (warm + restart)", n, sec, f"EM iters {m.n_em_iter_} (kept fit)")

    print(f"Markov model speed: K = {k}, torch threads = {a.threads}, median of {a.repeats} "
          f"(TraceEnum: 1) after a warm-up; evidence accuracy {(p.argmax(1) == z).mean():.3f}")
    w = max(len(r[0]) for r in rows)
    print(f"{'what':<{w}}  {'N':>6}  {'seconds':>10}  note")
    for what, n_, sec, note in rows:
        print(f"{what:<{w}}  {n_:>6}  {sec:>10.4f}  {note}")
    return rows


if __name__ == "__main__":
    main()
