"""The Markov model against hmmlearn (the compiled scaling recursion), in one process, CPU time.

Run (``pip install -e '.[bench]'`` for the peers)::

    python benchmarks/mm_peers.py                      # T = 3k, 30k, 300k; K = 10
    python benchmarks/mm_peers.py --t 3000 --repeats 3 --fit-t 3000

Two tables, single torch/BLAS thread, medians of CPU seconds (``time.process_time``) after a
warm-up:

1. one E-step: :func:`serket_pyro.ops.forward_backward.forward_backward` against hmmlearn's
   ``forward_scaling`` + ``backward_scaling`` + ``compute_scaling_xi_sum`` + posteriors on the same
   evidence (both from log evidence shifted by its row maximum), with the difference of the
   log-likelihoods and of the expected transition counts and the peak of Python allocations
   (tracemalloc);
2. learning the transitions: ``MarkovModel.update()`` with its defaults against ``hmmlearn``
   ``fit`` (start and transitions learned, the evidence given), each model's log-likelihood and the
   accuracy of its posterior states against the true sequence.

3. the same likelihood (``--restarts N``): hmmlearn on the module's own model, i.e. the robust
   evidence ``log((1 - eps) P_t + eps / K)`` with the module's learned ``eps`` and the start held
   uniform (``params="t"``), EM to convergence (``n_iter=100``, ``tol=1e-2``) from random matrices
   (rows ``Dirichlet(1)``), restart after restart until one reaches the module's log-likelihood
   (within ``1e-4`` relative): the CPU time of the restarts it took, or of all ``N`` if none did.

The evidence is ``mm_speed.cyclic_evidence``: the tutorials' cyclic sequence reported correctly
with probability 0.65, otherwise a confidently wrong class.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import tracemalloc

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mm_speed import cyclic_evidence  # noqa: E402
from timing import cpu_calls  # noqa: E402

import serket_pyro as srk  # noqa: E402
from serket_pyro.messages import ClassProbs  # noqa: E402
from serket_pyro.modules.mm import MarkovModel  # noqa: E402
from serket_pyro.ops.forward_backward import forward_backward  # noqa: E402


def hmmlearn_estep(start, A, log_obs):
    """hmmlearn's scaling E-step on given evidence: log-likelihood, posteriors, xi sum."""
    from hmmlearn import _hmmc
    m = log_obs.max(1, keepdims=True)
    frame = np.exp(log_obs - m)
    ll, fwd, scaling = _hmmc.forward_scaling(start, A, frame)
    bwd = _hmmc.backward_scaling(start, A, frame, scaling)
    xi = _hmmc.compute_scaling_xi_sum(fwd, A, bwd, frame)
    post = fwd * bwd
    post /= post.sum(1, keepdims=True)
    return ll + m.sum(), post, xi


def evidence_hmm(log_obs, **kw):
    """An hmmlearn HMM whose per-step log evidence is given (``X`` holds step indices)."""
    from hmmlearn.base import BaseHMM

    class EvidenceHMM(BaseHMM):
        def _get_n_fit_scalars_per_param(self):
            k = self.n_components
            return {"s": k - 1, "t": k * (k - 1)}

        def _compute_log_likelihood(self, X):
            return log_obs[X[:, 0]]

        def _generate_sample_from_state(self, state, random_state=None):
            raise NotImplementedError

    K = log_obs.shape[1]
    h = EvidenceHMM(n_components=K, params="st", init_params="", implementation="scaling", **kw)
    h.startprob_ = np.full(K, 1.0 / K)
    h.transmat_ = np.random.default_rng(0).dirichlet(np.full(K, 10.0), size=K)   # off the flat fixed point
    return h


def median_cpu(fn, repeats):
    fn()
    return statistics.median(cpu_calls(fn, repeats))


def peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(args=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--t", type=int, nargs="+", default=[3000, 30000, 300000], help="chain lengths (E-step)")
    parser.add_argument("--fit-t", type=int, nargs="*", default=[3000, 30000], help="chain lengths (learning)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--restarts", type=int, default=50,
                        help="most hmmlearn random restarts in the same-likelihood table (0: skip it)")
    a = parser.parse_args(args)
    torch.set_num_threads(1)
    K = a.k
    A = np.random.default_rng(1).dirichlet(np.ones(K), size=K)
    start = np.full(K, 1.0 / K)
    rows = []
    print(f"E-step, K = {K}: CPU seconds (median of {a.repeats}), peak MB (tracemalloc)")
    print(f"{'T':>7}  {'serket':>8}  {'hmmlearn':>8}  {'ratio':>5}  {'|dll|':>7}  {'|dxi|':>7}  {'MB serket':>9}  {'MB hmmlearn':>11}")
    for T in a.t:
        _, p = cyclic_evidence(T, K)
        lp = np.log(p)
        fb = lambda: forward_backward(np.log(start), np.log(A), lp)  # noqa: E731
        hm = lambda: hmmlearn_estep(start, A, lp)  # noqa: E731
        r, (ll, _, xi) = fb(), hm()
        reps = max(1, a.repeats if T <= 30000 else min(a.repeats, 3))
        ts, th = median_cpu(fb, reps), median_cpu(hm, reps)
        ms, mh = peak_bytes(fb) / 1e6, peak_bytes(hm) / 1e6
        dll, dxi = abs(r.log_likelihood - ll), float(np.abs(r.trans_counts - xi).max())
        rows.append(("estep", T, ts, th, dll, ms, mh))
        print(f"{T:>7}  {ts:>8.4f}  {th:>8.4f}  {ts / th:>5.2f}  {dll:>7.1e}  {dxi:>7.1e}  {ms:>9.0f}  {mh:>11.0f}",
              flush=True)

    if a.fit_t:
        print(f"\nlearning the transitions, K = {K}: CPU seconds (median of {a.repeats}); each model's "
              "log-likelihood; accuracy of the posterior states")
        print(f"{'T':>7}  {'MarkovModel':>11}  {'hmmlearn':>8}  {'ratio':>5}  {'E-steps':>10}  "
              f"{'loglik serket':>13}  {'loglik hmmlearn':>15}  {'acc':>11}")
    root = tempfile.mkdtemp(prefix="mm_peers_")
    same = []
    for T in a.fit_t:
        z, p = cyclic_evidence(T, K)
        lp = np.log(p)
        X = np.arange(T)[:, None]

        def serket():
            srk.reset_module_counter()
            obs = srk.Observation(ClassProbs.from_probs(p))
            m = MarkovModel(output_root=root)
            m.connect(obs)
            m.update()
            return obs, m

        def peer():
            h = evidence_hmm(lp)
            h.fit(X)
            return h

        ts, th = median_cpu(serket, a.repeats), median_cpu(peer, a.repeats)
        mm = sys.modules[MarkovModel.__module__]
        n_calls = [0]

        def counted(*args, **kw):
            n_calls[0] += 1
            return forward_backward(*args, **kw)

        mm.forward_backward = counted
        try:
            obs, m = serket()
        finally:
            mm.forward_backward = forward_backward
        h = peer()
        acc_s = ((obs.get_backward_msg().log_probs.numpy() + lp).argmax(1) == z).mean()
        acc_h = (h.predict_proba(X).argmax(1) == z).mean()
        rows.append(("fit", T, ts, th, m.log_likelihood_, h.score(X), acc_s, acc_h))
        print(f"{T:>7}  {ts:>11.3f}  {th:>8.3f}  {ts / th:>5.1f}  {n_calls[0]:>4} / {h.monitor_.iter:<3}  "
              f"{m.log_likelihood_:>13.1f}  {h.score(X):>15.1f}  {acc_s:.3f}/{acc_h:.3f}", flush=True)
        if a.restarts:
            same.append((T, ts, z, lp, m))
    for i, (T, ts, z, lp, m) in enumerate(same):
        if i == 0:
            print(f"\nthe same likelihood: hmmlearn random restarts on the module's model (robust evidence, "
                  f"its eps, uniform start), at most {a.restarts}")
            print(f"{'T':>7}  {'MarkovModel':>11}  {'hmmlearn':>8}  {'ratio':>5}  {'restarts':>8}  "
                  f"{'loglik serket':>13}  {'best hmmlearn':>13}  {'acc':>11}")
        r = same_likelihood(T, z, lp, m, a.restarts)
        rows.append(("same", T, ts) + r)
        th, n, best, acc_h, reached = r
        print(f"{T:>7}  {ts:>11.3f}  {th:>8.3f}  {ts / th:>5.1f}  {n:>5}{'' if reached else ' (never)':<3}  "
              f"{m.log_likelihood_:>13.1f}  {best:>13.1f}  1.000/{acc_h:.3f}", flush=True)
    return rows


def same_likelihood(T, z, lp, m, restarts, rel=1e-4):
    """hmmlearn restarts on the module's model until one reaches its log-likelihood.

    Returns ``(CPU seconds, restarts run, best log-likelihood, its accuracy, reached)``.
    """
    import time

    K = lp.shape[1]
    eps = m.evidence_noise_
    lpn = lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)
    robust = np.logaddexp(np.log1p(-eps) + lpn, np.log(eps / K)) if eps > 0 else lpn
    X = np.arange(T)[:, None]
    target = m.log_likelihood_ - rel * abs(m.log_likelihood_)
    rng = np.random.default_rng(0)
    best, best_h, t0 = -np.inf, None, time.process_time()
    for n in range(1, restarts + 1):
        h = evidence_hmm(robust, n_iter=100, tol=1e-2)
        h.params = "t"
        h.transmat_ = rng.dirichlet(np.ones(K), size=K)
        h.fit(X)
        ll = h.score(X)
        if ll > best:
            best, best_h = ll, h
        if best >= target:
            break
    cpu = time.process_time() - t0
    acc = (best_h.predict_proba(X).argmax(1) == z).mean()
    return cpu, n, best, acc, best >= target


if __name__ == "__main__":
    main()
