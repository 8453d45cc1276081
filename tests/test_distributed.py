"""Data-parallel runs (serket_pyro.distributed): sharding, exact all-reduced statistics, the sharded
forward-backward, and a 2-process gloo fit against the 1-process one (spawned here, CPU only)."""

import json
import os
import socket
import time
import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import serket_pyro as srk
from serket_pyro import distributed as sd
from serket_pyro.modules import gmm as gmm_mod
from serket_pyro.modules import mlda as mlda_mod
from serket_pyro.ops.forward_backward import forward_backward
from serket_pyro.ops.sharded_forward_backward import shard_forward_backward, transfer_summary


# ----------------------------------------------------------------------------- data
def _gmm_data(N=301, seed=3):
    """Three 2-D classes; the integer-valued copy makes float sums exact in any order."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, N)
    x = rng.normal(size=(N, 2)) * 0.6 + np.array([[0, 0], [6, 0], [0, 6]])[y]
    return x, y


def _chain_data(N=240, seed=5):
    """A noisy cyclic chain 0 -> 1 -> 2 -> 0 over 3 classes of 2-D points (blocks of 8 steps)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(N) // 8) % 3
    x = rng.normal(size=(N, 2)) * 0.8 + np.array([[0, 0], [3, 0], [0, 3]])[y]
    return x, y


def _counts(N=41, V=9, seed=7):
    """Document-word counts with whole and (binary-exact) fractional parts."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 4, size=(N, V)).astype(np.float64)
    c[rng.random((N, V)) < 0.3] += 0.25
    c[:, 0] += 1.0  # every document has a token
    return torch.from_numpy(c)


def _topic_docs(N=61, seed=9):
    """Documents of 3 topics over two modalities (word counts drawn from each topic's words)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, N)
    mods = []
    for V in (12, 9):
        phi = np.full((3, V), 0.02)
        for k in range(3):
            phi[k, k * (V // 3):(k + 1) * (V // 3)] = 1.0
        phi /= phi.sum(1, keepdims=True)
        mods.append(np.stack([rng.multinomial(15, phi[k]) for k in y]).astype(np.float64))
    return mods, y


def _mm_evidence(N=301, seed=13):
    """A child's class probabilities over a 4-state chain with blocks of 2-6 steps; the child
    reads class 3 as class 2 (a merge: split moves and the confusion model have work to do)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(200) % 4, rng.integers(2, 7, 200))[:N]
    p = rng.dirichlet(np.ones(4) * 0.5, N) * 0.3
    p[np.arange(N), np.where(y == 3, 2, y)] += 0.7
    return p, y


def _run_mm(p, y, out, **kw):
    """Two updates (the second warm-started) of a Markov model over fixed class probabilities."""
    from serket_pyro.messages import ClassProbs

    srk.reset_module_counter()
    srk.set_output_root(out)
    m = srk.MarkovModel(itr=30, max_splits=2, alpha=0.3, category=y, **kw)
    m.connect(srk.Observation(ClassProbs.from_probs(p)))
    for _ in range(2):
        m.update()
    return m


def _mlda_state(N, K=3, seed=4):
    """A current draw of an MLDA chain over :func:`_topic_docs` (theta (N, K), phis per modality)."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.rand(N, K, generator=g, dtype=torch.float64) + 0.1
    theta[torch.arange(N), torch.arange(N) % 2] += 2.0     # two topics own every document: one to split
    phis = [torch.rand(K, V, generator=g, dtype=torch.float64) + 0.05 for V in (12, 9)]
    return theta / theta.sum(1, keepdim=True), [p / p.sum(1, keepdim=True) for p in phis]


def _mlda_ndk(N, K=3):
    return torch.from_numpy(np.stack([(np.arange(N)[:, None] * (c + 2) + np.arange(K)) % 5 for c in range(2)])
                            .astype(np.float64))


def _even_split(hists, alpha, beta):
    """A restricted split that depends on each document's own counts only (the same whatever the shard)."""
    return hists[0][:, 0] + hists[1][:, 1] > hists[0][:, 4]


def _fit_joint(data_parallel):
    """A compiled GMM + Markov chain over :func:`_chain_data` (classes enumerated, the chain summed:
    no sampled latent), 3 epochs of 7-chunk minibatches; its parameters and losses."""
    from serket_pyro.joint import joint_program
    from serket_pyro.joint.data_parallel import fit_data_parallel

    x, _ = _chain_data(N=130)
    srk.reset_module_counter()
    srk.set_seed(6)
    g = srk.GMM(3)
    g.connect(srk.Observation(x))
    m = srk.MarkovModel()
    m.connect(g)
    p = joint_program(m, chunk_len=10)
    kw = dict(batch_size=70, lr=0.05)
    losses = fit_data_parallel(p, 3, **kw) if data_parallel else p.fit(3, **kw)
    return {k: v.detach().clone() for k, v in p.params(g).items()}, p.params(m)["trans_prob"].detach().clone(), losses


def _joint_start(g, m, D=2):
    """Fixed starting values of a compiled GMM (+ Markov chain): the same on 1 and 2 processes."""
    means = torch.tensor([[0.5, 0.2], [2.5, 0.1], [0.3, 2.6]], dtype=torch.float64)[:, :D]
    return {(g, "means"): means, (g, "scale_tril"): torch.eye(D, dtype=torch.float64).expand(3, D, D) * 1.3,
            **({(g, "weights"): torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64)} if m is None else
               {(m, "trans_prob"): torch.full((3, 3), 0.2, dtype=torch.float64) + 0.4 * torch.eye(3,
                                                                                                 dtype=torch.float64)})}


def _fit_joint_program(with_mm, rows=slice(None)):
    """A compiled GMM (+ Markov chain, chunks of 10 rows) on ``rows`` of the data, from fixed
    starting values, 3 epochs of 70-row minibatches: ``(params, chain/class log posterior of the
    rows, losses, program rows)``.  Inside ``distributed.sharded`` with this rank's rows the program
    is shard-holding."""
    from serket_pyro.joint import joint_program
    from serket_pyro.joint.data_parallel import fit_data_parallel

    x, _ = _chain_data(N=140) if with_mm else _gmm_data(N=131)
    srk.reset_module_counter()
    srk.set_seed(6)
    g = srk.GMM(3)
    g.connect(srk.Observation(x[rows]))
    m = None
    if with_mm:
        m = srk.MarkovModel()
        m.connect(g)
    p = joint_program(m if with_mm else g, chunk_len=10)
    for (mod, k), v in _joint_start(g, m).items():
        p.set_param(mod, k, v)
    srk.set_seed(7)
    losses = fit_data_parallel(p, 3, batch_size=70, lr=0.05)
    params = {k: v.detach().clone() for k, v in p.params(g).items()}
    if with_mm:
        params["trans_prob"] = p.params(m)["trans_prob"].detach().clone()
    post = p.class_log_posterior()[(m or g).name]
    return params, post, losses, p.N


def _pretrain_joint_model(rows=slice(None)):
    """JointModel (VAE -> GMM -> MM, chunks of 10 rows) on ``rows`` of 90 binary 16-pixel images:
    2 epochs of deterministic pretraining (an autoencoder on the encoder means, no noise) in
    30-image minibatches; ``(losses, encoder parameters)``."""
    from serket_pyro.joint import JointModel

    rng = np.random.default_rng(2)
    imgs = (rng.random((90, 16)) < np.repeat(rng.random((3, 16)), 30, axis=0)).astype(np.float64)
    srk.reset_module_counter()
    srk.set_seed(1)
    v, g, m = srk.VAE(2, batch_size=30), srk.GMM(3), srk.MarkovModel()
    v.connect(srk.Observation(imgs[rows]))
    g.connect(v)
    m.connect(g)
    jm = JointModel(v, g, m, chunk_len=10)
    srk.set_seed(7)
    losses = jm.pretrain(2, 30, 1e-2, kl_weight=0.0)
    return losses, [p.detach().clone() for p in v.encoder_.parameters()]


def _joint_shard_worker(rank, world, port, tmp):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    out = {}
    try:
        for with_mm, N in ((True, 140), (False, 131)):
            a, b = sd.shard_bounds(N, world, rank)
            with sd.sharded(N, seed=0):
                params, post, losses, n_rows = _fit_joint_program(with_mm, slice(a, b))
                whole = sd.gather_output(post.numpy())
            out[with_mm] = (params, whole, losses, n_rows)
        a, b = sd.shard_bounds(90, world, rank)
        with sd.sharded(90, seed=0):
            out["pretrain"] = _pretrain_joint_model(slice(a, b))
        from test_joint import _linear_gaussian_vae_gmm

        a, b = sd.shard_bounds(400, world, rank)
        with sd.sharded(400, seed=0):
            jm, best = _linear_gaussian_vae_gmm(rows=slice(a, b))
            jm.start_encoder_scale(batch_size=200)
            out["scale"] = ((0.5 * jm.vae.encoder_scale_bias().detach().double()).exp(), best, jm.N)
        out["complete"] = True
    finally:
        torch.save(out, os.path.join(tmp, f"joint{rank}.pt"))
        torch.distributed.destroy_process_group()


def _topics(doc, word, K):
    return (doc * 7 + word * 3) % K


# -------------------------------------------------------------------- single process
def test_shard_bounds_contiguous_blocks_in_rank_order():
    assert [sd.shard_bounds(10, 3, r) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert sd.shard_sizes(7, 7) == (1,) * 7
    with pytest.raises(ValueError, match="cannot be split"):
        sd.shard_bounds(2, 3, 0)


def test_helpers_are_noops_in_one_process():
    t = torch.arange(6.0).view(2, 3)
    assert not sd.is_sharded() and sd.is_writer()
    assert sd.all_reduce_sum(t) is t and sd.gather_rows(t) is t
    assert sd.all_reduce_scalar(2.5) == 2.5
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    with sd.local_rng():
        b = torch.rand(3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("bounds", [[0, 100, 101, 400, 503], [0, 251, 503], [0, 1, 503]])
def test_sharded_forward_backward_equals_unsharded(bounds):
    rng = np.random.default_rng(0)
    K, T = 4, bounds[-1]
    A = rng.dirichlet(np.ones(K) * 0.5, size=K)
    init = rng.dirichlet(np.ones(K))
    lo = rng.normal(size=(T, K)) * 3
    lo[17, 2] = -np.inf  # impossible states are allowed
    ref = forward_backward(np.log(init), np.log(A), lo)
    shards = [lo[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    summ = [transfer_summary(np.log(init), np.log(A), s, first=i == 0) for i, s in enumerate(shards)]
    res = [shard_forward_backward(np.log(init), np.log(A), s, summ, i) for i, s in enumerate(shards)]
    for r in res:
        assert abs(r.log_likelihood - ref.log_likelihood) < 1e-9
    np.testing.assert_allclose(np.concatenate([r.log_marginals for r in res]), ref.log_marginals, atol=1e-9)
    np.testing.assert_allclose(np.concatenate([r.log_loo for r in res]), ref.log_loo, atol=1e-9)
    np.testing.assert_allclose(sum(r.trans_counts for r in res), ref.trans_counts, atol=1e-9)


# --------------------------------------------------------------------- two processes
def _spawn(worker, tmp, prefix, grace: float = 60.0, limit: float = 1800.0):
    """``mp.spawn`` of 2 ranks that save ``<tmp>/<prefix><rank>.pt``; their results.  A rank that,
    AFTER both saved complete results, is killed by a signal or does not exit within ``grace``
    seconds (gloo's teardown at exit aborted once in 9 runs and hung once, at torch 2.0.1) is a
    warning and is killed; any other failure, a result without ``complete``, or no results
    within ``limit`` seconds fails."""
    files = [os.path.join(tmp, f"{prefix}{r}.pt") for r in range(2)]

    def done():
        try:
            return all(os.path.exists(f) and torch.load(f, weights_only=False).get("complete") for f in files)
        except Exception:  # noqa: BLE001 - a file still being written
            return False

    ctx = mp.spawn(worker, args=(2, _free_port(), tmp), nprocs=2, join=False)
    start, finished = time.monotonic(), None
    try:
        while not ctx.join(timeout=2):
            now = time.monotonic()
            if finished is None and done():
                finished = now
            if finished is not None and now - finished > grace:
                for p in ctx.processes:
                    if p.is_alive():
                        p.kill()
                warnings.warn(f"a rank had not exited {grace:.0f} s after saving its results: killed", stacklevel=2)
                break
            if finished is None and now - start > limit:
                for p in ctx.processes:
                    p.kill()
                raise AssertionError(f"the 2 ranks saved no complete results in {limit:.0f} s")
    except mp.ProcessExitedException as e:
        if e.signal_name is None or not done():
            raise
        warnings.warn(f"rank {e.error_index} was killed by {e.signal_name} after saving its results", stacklevel=2)
    res = [torch.load(f, weights_only=False) for f in files]
    assert all(r.get("complete") for r in res), "a rank did not finish"
    return res


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_gmm_fit(x, y, out, distributed, with_mm):
    srk.reset_module_counter()
    srk.set_output_root(out)
    obs = srk.Observation(x)
    g = srk.GMM(3, itr=15, n_init=2, category=y)
    g.connect(obs)
    mods = [g]
    if with_mm:
        m = srk.MarkovModel(itr=20)
        m.connect(g)
        mods.append(m)
    srk.fit(*mods, n_iter=2, seed=11, progress=False, distributed=distributed)
    return g


def _worker(rank, world, port, tmp):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    out = {}
    try:
        # 1. GMM statistics of the same assignments, summed over the ranks
        x, _ = _gmm_data()
        N = x.shape[0]
        xt = torch.from_numpy(np.round(x * 4))  # integer-valued: sums exact in any order
        xt_real = torch.from_numpy(x)
        z = torch.arange(N) % 3
        a, b = sd.shard_bounds(N, world, rank)
        with sd.sharded(N, seed=0):
            for key, v in (("int", xt), ("real", xt_real)):
                xx = (v.unsqueeze(-1) * v.unsqueeze(-2)).reshape(N, -1)
                st = gmm_mod._suff_stats(v[a:b], xx[a:b], z[a:b], 3)
                out[f"gmm_{key}"] = [t.clone() for t in st]
            # 2. MLDA topic-word counts of the same topics (a document's block of rows)
            c = _counts()
            Nd = c.shape[0]
            da, db = sd.shard_bounds(Nd, world, rank)
            mod = mlda_mod._Modality.build(c[da:db])
            K = 4
            zw = _topics(mod.tok_doc + da, mod.tok_word, K).unsqueeze(0)
            zp = _topics(mod.doc[mod.part_entry] + da, mod.word[mod.part_entry], K).unsqueeze(0)
            _, nkw = mlda_mod._count_topics(zw, zp, mod, K)
            out["mlda_nkw"] = sd.all_reduce_tensors([nkw])[0]
            # ... and inside a Gibbs sweep (the hook the sampler uses): its counts are those of
            # the topics every rank drew, (word, topic, weight) triplets returned here
            theta = torch.full((1, db - da, K), 1.0 / K, dtype=torch.float64)
            phi = torch.full((1, K, c.shape[1]), 1.0 / c.shape[1], dtype=torch.float64)
            _, _, _, nkws, topics = mlda_mod._gibbs_sweep(theta, [phi], [mod], None, 0.5, 0.5, return_topics=True)
            (tw, tp), = topics
            out["mlda_sweep"] = (nkws[0][0].clone(), torch.cat([mod.tok_word, mod.word[mod.part_entry]]),
                                 torch.cat([tw[0], tp[0]]),
                                 torch.cat([torch.ones(tw.shape[1], dtype=torch.float64), mod.part_weight]))
            # 3. the sharded forward-backward over the process group
            from serket_pyro.ops.sharded_forward_backward import sharded_forward_backward

            rng = np.random.default_rng(1)
            T, K = 157, 3
            A = rng.dirichlet(np.ones(K), size=K)
            lo = rng.normal(size=(T, K)) * 2
            with sd.sharded(T, seed=0):
                ta, tb = sd.shard_bounds(T, world, rank)
                r = sharded_forward_backward(np.full(K, -np.log(K)), np.log(A), lo[ta:tb])
            out["fb"] = (r.log_likelihood, r.log_marginals, r.trans_counts, r.log_loo, ta, tb)
            # 3b. the Markov model's EM on this rank's steps of the same evidence (sharded E-step,
            # all-reduced statistics, the same starts, split moves and evidence model on every rank)
            from serket_pyro.modules import mm as mm_mod

            p, y = _mm_evidence()
            pa, pb = sd.shard_bounds(len(p), world, rank)
        with sd.sharded(len(p), seed=0):
            m = _run_mm(p[pa:pb], y[pa:pb], os.path.join(tmp, "mm_out"))
            out["mm"] = (m.trans_prob_.clone(), m.log_likelihood_, m.evidence_noise_, m.emission_,
                         m._down[0].log_probs.clone(), m._up.log_probs.clone(), dict(m.metrics_), pa, pb)
            m = _run_mm(p[pa:pb], y[pa:pb], os.path.join(tmp, "mm_noise"), evidence_model="noise")
            out["mm_noise"] = (m.trans_prob_.clone(), m.evidence_noise_, m._down[0].log_probs.clone())
            lm = np.log(p[pa:pb])
            A = np.full((4, 4), 0.1) + np.eye(4)
            out["mm_parts"] = (mm_mod._sharded_split_proposals(A / A.sum(1, keepdims=True), lm, 0.3, min_second=0.05),
                               mm_mod._moment_transitions(lm, 0.3))
        # 3c. MLDA split-merge proposals and scores from this rank's documents (a deterministic
        # restricted split, so that 1 and 2 processes propose the same moves)
        docs, _ = _topic_docs()
        hists = [torch.from_numpy(d) for d in docs]
        Nd = len(docs[0])
        da, db = sd.shard_bounds(Nd, world, rank)
        theta, phis = _mlda_state(Nd)
        orig_split = mlda_mod._restricted_split
        mlda_mod._restricted_split = _even_split
        try:
            with sd.sharded(Nd, seed=0):
                props = mlda_mod._split_merge_proposals(theta[da:db], phis, [h[da:db] for h in hists], 0.4, 0.3)
                ndk = _mlda_ndk(Nd)
                nkws = [torch.full((2, 3, h.shape[1]), 2.0, dtype=torch.float64) for h in hists]
                score = mlda_mod._global_log_collapsed_joint(ndk[:, da:db], nkws, 0.4, 0.3, theta[da:db])
        finally:
            mlda_mod._restricted_split = orig_split
        out["mlda_sm"] = (props, score, da, db)
        # 3e. the GMM's k-means start on periodic data (two clusters alternating): its sample of
        # each shard must hold both
        xk = np.where(np.arange(8004) % 2 == 0, 0.0, 10.0)[:, None] + np.random.default_rng(3).normal(size=(8004, 1)) * 0.1
        ka, kb = sd.shard_bounds(8004, world, rank)
        with sd.sharded(8004, seed=0):
            out["kmeans"] = (gmm_mod._kmeanspp_sharded(torch.from_numpy(xk[ka:kb]), 2, 2, 10), ka)
        # 3d. joint mode: a compiled GMM + Markov chain program fitted data-parallel
        out["joint"] = _fit_joint(True)
        with sd.sharded(3, seed=0):  # shards of 2 and 1 rows: the halo reaches over the short one
            h = sd.shard_bounds(3, world, rank)
            out["halo"] = sd.halo_rows(np.arange(10, 13)[h[0]:h[1]], 2, 2)
        # 4. whole fits: GMM alone and GMM + Markov model, outputs under tmp/2p_*
        _, y = _gmm_data()
        for with_mm in (False, True):
            g = _run_gmm_fit(x if not with_mm else _chain_data()[0], _gmm_data()[1] if not with_mm else
                             _chain_data()[1], os.path.join(tmp, f"2p_{with_mm}"), True, with_mm)
            out[f"fit_{with_mm}"] = (g.means_.clone(), g.weights_.clone(), g.metrics_.get("accuracy"),
                                     g.last_sample_["means"].clone())
        # 5. checkpoints: 3 iterations at once == 2 iterations, then resumed to 3
        for name, n_iter, resume in (("whole", 3, False), ("part", 2, False), ("part", 3, True)):
            srk.reset_module_counter()
            srk.set_output_root(os.path.join(tmp, f"ck_out_{name}"))
            xc, yc = _chain_data()  # overlapping classes: the points' draws matter
            g = srk.GMM(3, itr=5, n_init=1, category=yc[:-1])
            g.connect(srk.Observation(xc[:-1]))
            srk.fit(g, n_iter=n_iter, seed=4, progress=False, distributed=True,
                    checkpoint_dir=os.path.join(tmp, f"ck_{name}"), resume=resume)
            out[f"ckpt_{name}"] = torch.cat([g.means_, g.last_sample_["means"]])
        # 5b. each process loads only its block (distributed="shards"): the same run
        a, b = sd.shard_bounds(N, world, rank)
        for name, data, cat, mode in (("cut", x, y, True), ("given", x[a:b], y[a:b], "shards")):
            srk.reset_module_counter()
            srk.set_output_root(os.path.join(tmp, f"sh_{name}"))
            g = srk.GMM(3, itr=5, n_init=1, category=cat)
            g.connect(srk.Observation(data))
            srk.fit(g, n_iter=2, seed=4, progress=False, distributed=mode)
            out[f"sh_{name}"] = g.last_sample_["means"].clone()
        # 5c. an MLDA with two modalities: its topic-word counts all-reduced at every sweep
        docs, labels = _topic_docs()
        srk.reset_module_counter()
        srk.set_output_root(os.path.join(tmp, "mlda_out"))
        ml = srk.MLDA(3, itr=30, category=labels)
        ml.connect(srk.Observation(docs[0]), srk.Observation(docs[1]))
        # split-merge moves on (their statistics all-reduced: every rank accepts the same move)
        srk.fit(ml, n_iter=2, seed=3, progress=False, distributed=True)
        out["mlda_fit"] = ([p.clone() for p in ml.phi_], ml.metrics_["accuracy"], ml.split_merge_accepted_)
        # 5d. its graph saved: every rank's rows gathered, rank 0 writes; per-point state that the
        # module does not declare in _row_state is refused, not saved as rank 0's block
        srk.save_graph(os.path.join(tmp, "mlda_saved"), ml, distributed=True)
        out["mlda_rows"] = (torch.as_tensor(np.asarray(ml.theta_)).clone(), sd.shard_bounds(61, world, rank))
        ml._row_state = ()
        try:
            srk.save_graph(os.path.join(tmp, "mlda_bad"), ml, distributed=True)
        except ValueError as e:
            out["mlda_undeclared"] = str(e)
        # 6. a VAE under a GMM: averaged gradients keep the networks identical on every rank
        srk.reset_module_counter()
        srk.set_output_root(os.path.join(tmp, "vae_out"))
        rng = np.random.default_rng(2)
        imgs = (rng.random((90, 16)) < np.repeat(rng.random((2, 16)), 45, axis=0)).astype(np.float64)
        v = srk.VAE(2, itr=3, batch_size=20)
        gv = srk.GMM(2, itr=5, n_init=1)
        v.connect(srk.Observation(imgs))
        gv.connect(v)
        srk.fit(v, gv, n_iter=2, seed=1, progress=False, distributed=True)
        out["vae_params"] = [p.detach().clone() for p in v.encoder_.parameters()]
        out["complete"] = True
    finally:
        torch.save(out, os.path.join(tmp, f"rank{rank}.pt"))
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("dist2"))
    return tmp, _spawn(_worker, tmp, "rank")


def test_all_reduced_gmm_statistics_equal_one_process(two_process_results):
    _, res = two_process_results
    x, _ = _gmm_data()
    N = x.shape[0]
    z = torch.arange(N) % 3
    for key, v in (("int", torch.from_numpy(np.round(x * 4))), ("real", torch.from_numpy(x))):
        xx = (v.unsqueeze(-1) * v.unsqueeze(-2)).reshape(N, -1)
        ref = gmm_mod._suff_stats(v, xx, z, 3)
        for r in res:
            for got, want in zip(r[f"gmm_{key}"], ref):
                if key == "int":
                    assert torch.equal(got, want)  # exact
                else:  # the same sum in another order
                    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-12)


def test_all_reduced_mlda_counts_equal_one_process(two_process_results):
    _, res = two_process_results
    c = _counts()
    mod = mlda_mod._Modality.build(c)
    K = 4
    zw = _topics(mod.tok_doc, mod.tok_word, K).unsqueeze(0)
    zp = _topics(mod.doc[mod.part_entry], mod.word[mod.part_entry], K).unsqueeze(0)
    _, ref = mlda_mod._count_topics(zw, zp, mod, K)
    for r in res:
        assert torch.equal(r["mlda_nkw"], ref)
    # the sweep's all-reduced counts are those of both ranks' drawn topics, on both ranks
    V = c.shape[1]
    want = torch.zeros(K * V, dtype=torch.float64)
    for r in res:
        _, word, topic, weight = r["mlda_sweep"]
        want.index_put_((topic * V + word,), weight, accumulate=True)
    for r in res:
        assert torch.equal(r["mlda_sweep"][0], want.view(K, V))


def test_sharded_forward_backward_over_gloo_equals_unsharded(two_process_results):
    _, res = two_process_results
    rng = np.random.default_rng(1)
    T, K = 157, 3
    A = rng.dirichlet(np.ones(K), size=K)
    lo = rng.normal(size=(T, K)) * 2
    ref = forward_backward(np.full(K, -np.log(K)), np.log(A), lo)
    for r in res:
        ll, marg, counts, loo, a, b = r["fb"]
        assert abs(ll - ref.log_likelihood) < 1e-9
        np.testing.assert_allclose(counts, ref.trans_counts, atol=1e-9)
        np.testing.assert_allclose(marg, ref.log_marginals[a:b], atol=1e-9)
        np.testing.assert_allclose(loo, ref.log_loo[a:b], atol=1e-9)


@pytest.mark.parametrize("with_mm", [False, True])
def test_two_process_fit_matches_one_process(two_process_results, tmp_path, with_mm):
    tmp, res = two_process_results
    x, y = _chain_data() if with_mm else _gmm_data()
    g1 = _run_gmm_fit(x, y, str(tmp_path / "1p"), False, with_mm)
    acc1 = g1.metrics_["accuracy"]
    means = [r[f"fit_{with_mm}"][0] for r in res]
    assert torch.equal(means[0], means[1])  # global parameters identical on every rank
    # ... also the chain's last draw: every rank draws the global parameters from the same stream
    assert torch.equal(res[0][f"fit_{with_mm}"][3], res[1][f"fit_{with_mm}"][3])
    out2 = os.path.join(tmp, f"2p_{with_mm}")
    # rank 0 wrote the same files as one process, per-point files for every point
    names1 = sorted(os.path.relpath(os.path.join(d, f), str(tmp_path / "1p"))
                    for d, _, fs in os.walk(tmp_path / "1p") for f in fs)
    names2 = sorted(os.path.relpath(os.path.join(d, f), out2) for d, _, fs in os.walk(out2) for f in fs)
    assert names1 == names2
    gdir = [n for n in os.listdir(out2) if n.endswith("_gmm")][0]
    cls2 = np.loadtxt(os.path.join(out2, gdir, "class_learn.txt"))
    assert cls2.shape == (x.shape[0],)
    acc2 = float(np.loadtxt(os.path.join(out2, gdir, "acc_learn.txt")))
    assert acc2 == pytest.approx(res[0][f"fit_{with_mm}"][2])
    assert abs(acc2 - acc1) <= 0.0125, (acc1, acc2)  # 3 of 240 points: another random stream
    assert acc1 > 0.9
    if with_mm:
        mdir = [n for n in os.listdir(out2) if n.endswith("_mm")][0]
        assert np.loadtxt(os.path.join(out2, mdir, "msg_learn.txt")).shape == (x.shape[0], 3)
    assert np.loadtxt(os.path.join(out2, gdir, "mu_learn.txt")).shape == x.shape
    order = torch.argsort(g1.means_[:, 0] * 10 + g1.means_[:, 1])
    order2 = torch.argsort(means[0][:, 0] * 10 + means[0][:, 1])
    torch.testing.assert_close(means[0][order2], g1.means_[order], atol=0.15, rtol=0)


def test_two_process_checkpoint_resume_continues_exactly(two_process_results):
    tmp, res = two_process_results
    for r in res:
        assert torch.equal(r["ckpt_whole"], r["ckpt_part"])
    assert os.path.isdir(os.path.join(tmp, "ck_part", "rank001", "iter_002"))
    assert os.path.isfile(os.path.join(tmp, "ck_part", "metrics.jsonl"))


def test_two_process_vae_networks_stay_identical(two_process_results):
    tmp, res = two_process_results
    a, b = res[0]["vae_params"], res[1]["vae_params"]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    vdir = [n for n in os.listdir(os.path.join(tmp, "vae_out")) if n.endswith("_vae")][0]
    z = np.loadtxt(os.path.join(tmp, "vae_out", vdir, "z_learn.txt"))
    assert z.shape == (90, 2)


def test_two_process_saved_graph_holds_every_row(two_process_results):
    """save_graph(distributed=True): rank 0 writes one graph with every process's rows (the
    observations' shapes, the messages, MLDA's theta_ in rank order), which loads in one process
    and recognises; a per-point entry missing from _row_state is refused by name on every rank."""
    tmp, res = two_process_results
    docs, _ = _topic_docs()
    info = json.load(open(os.path.join(tmp, "mlda_saved", "graph.json")))
    assert [e["observation"]["shape"] for e in info["modules"] if "observation" in e] == [list(d.shape) for d in docs]
    g = srk.load_graph(os.path.join(tmp, "mlda_saved"), [docs[0], docs[1]])
    ml = [m for m in g.modules.values() if isinstance(m, srk.MLDA)][0]
    whole = torch.cat([r["mlda_rows"][0] for r in res])
    assert [r["mlda_rows"][1] for r in res] == [(0, 31), (31, 61)]
    np.testing.assert_array_equal(np.asarray(ml.theta_), whole.numpy())
    assert ml.forward_msg.N == 61
    rec = srk.load_graph(os.path.join(tmp, "mlda_saved"), [docs[0], docs[1]], mode="recog",
                         output_root=os.path.join(tmp, "mlda_recog"))
    rec.fit(n_iter=1, seed=0, progress=False)
    assert not os.path.exists(os.path.join(tmp, "mlda_bad"))
    for r in res:
        assert "state entry 'theta' has a row per data point" in r["mlda_undeclared"]
        assert "MLDA._row_state" in r["mlda_undeclared"]


def test_two_process_fit_of_shards_loaded_by_each_process(two_process_results):
    _, res = two_process_results
    for r in res:
        assert torch.equal(r["sh_cut"], r["sh_given"])


def test_two_process_mlda_fit_matches_one_process(two_process_results, tmp_path):
    tmp, res = two_process_results
    docs, labels = _topic_docs()
    srk.set_output_root(str(tmp_path))
    ml = srk.MLDA(3, itr=30, category=labels)
    ml.connect(srk.Observation(docs[0]), srk.Observation(docs[1]))
    srk.fit(ml, n_iter=2, seed=3, progress=False)
    phis = [r["mlda_fit"][0] for r in res]
    assert all(torch.equal(a, b) for a, b in zip(*phis))  # topics identical on every rank
    assert res[0]["mlda_fit"][2] == res[1]["mlda_fit"][2]  # the same split-merge moves accepted
    acc2 = res[0]["mlda_fit"][1]
    assert ml.metrics_["accuracy"] > 0.9 and abs(acc2 - ml.metrics_["accuracy"]) <= 0.02
    mdir = [n for n in os.listdir(os.path.join(tmp, "mlda_out")) if n.endswith("_mlda")][0]
    assert np.loadtxt(os.path.join(tmp, "mlda_out", mdir, "class_learn.txt")).shape == (61,)


def test_two_process_markov_model_em_equals_one_process(two_process_results, tmp_path):
    """The sharded EM (each rank its steps of the evidence) learns the 1-process matrix and sends
    the same messages, to 1e-9, through two updates with restarts, split moves, a learned noise
    and the evidence-model choice."""
    from serket_pyro.modules import mm as mm_mod

    tmp, res = two_process_results
    p, y = _mm_evidence()
    m1 = _run_mm(p, y, str(tmp_path / "1p"))
    assert m1.metrics_["confusion_model"] == 1.0 and np.isfinite(m1.metrics_["evidence_gain"])
    for r in res:
        A, ll, eps, em, down, up, metrics, a, b = r["mm"]
        np.testing.assert_allclose(A.numpy(), m1.trans_prob_.numpy(), atol=1e-9, rtol=0)
        assert abs(ll - m1.log_likelihood_) < 1e-9 and abs(eps - m1.evidence_noise_) < 1e-9
        np.testing.assert_allclose(em.numpy(), m1.emission_.numpy(), atol=1e-9, rtol=0)
        np.testing.assert_allclose(down.numpy(), m1._down[0].log_probs[a:b].numpy(), atol=1e-9, rtol=0)
        np.testing.assert_allclose(up.numpy(), m1._up.log_probs[a:b].numpy(), atol=1e-9, rtol=0)
        assert metrics["em_iterations"] == m1.metrics_["em_iterations"]
        assert metrics["accuracy"] == m1.metrics_["accuracy"]  # scored on every rank's steps
    # the noise model alone: eps learned from every rank's steps
    m1 = _run_mm(p, y, str(tmp_path / "1n"), evidence_model="noise")
    assert m1.evidence_noise_ < 0.8  # learned (from lock_noise 0.9)
    for r in res:
        A, eps, down = r["mm_noise"]
        a, b = r["mm"][-2:]
        np.testing.assert_allclose(A.numpy(), m1.trans_prob_.numpy(), atol=1e-9, rtol=0)
        assert abs(eps - m1.evidence_noise_) < 1e-9
        np.testing.assert_allclose(down.numpy(), m1._down[0].log_probs[a:b].numpy(), atol=1e-9, rtol=0)
    # rank 0 wrote the whole chain's message, as one process
    mdir = [n for n in os.listdir(os.path.join(tmp, "mm_out")) if n.endswith("_mm")][0]
    np.testing.assert_allclose(np.loadtxt(os.path.join(tmp, "mm_out", mdir, "msg_learn.txt")),
                               np.loadtxt(tmp_path / "1p" / mdir / "msg_learn.txt"), atol=1e-9)
    # the split proposals and the moment start from the shards: the 1-process matrices
    A = np.full((4, 4), 0.1) + np.eye(4)
    want = mm_mod._split_proposals(A / A.sum(1, keepdims=True), np.log(p), 0.3, min_second=0.05)
    assert len(want) > 2
    for r in res:
        props, moment = r["mm_parts"]
        assert len(props) == len(want)
        for got, w in zip(props, want):
            np.testing.assert_allclose(got, w, atol=1e-12, rtol=0)
        np.testing.assert_allclose(moment, mm_mod._moment_transitions(np.log(p), 0.3), atol=1e-12, rtol=0)
    (b0, a0), (b1, a1) = res[0]["halo"], res[1]["halo"]
    assert b0.tolist() == [] and a0.tolist() == [12] and b1.tolist() == [10, 11] and a1.tolist() == []


def test_two_process_mlda_split_merge_statistics_equal_one_process(two_process_results):
    """The split-merge moves of a sharded MLDA: the same proposals (sizes, halves and re-estimated
    topics summed over the ranks) and the same scores as one process, so every rank accepts the
    same move."""
    _, res = two_process_results
    docs, _ = _topic_docs()
    hists = [torch.from_numpy(d) for d in docs]
    N = len(docs[0])
    theta, phis = _mlda_state(N)
    orig = mlda_mod._restricted_split
    mlda_mod._restricted_split = _even_split
    try:
        want = mlda_mod._split_merge_proposals(theta, phis, hists, 0.4, 0.3)
    finally:
        mlda_mod._restricted_split = orig
    assert len(want) >= 2
    nkws = [torch.full((2, 3, h.shape[1]), 2.0, dtype=torch.float64) for h in hists]
    score = mlda_mod.log_collapsed_joint(_mlda_ndk(N), nkws, 0.4, 0.3, theta)
    for r in res:
        props, got_score, a, b = r["mlda_sm"]
        assert len(props) == len(want)
        for (th, ph), (th1, ph1) in zip(props, want):
            torch.testing.assert_close(th, th1[a:b], rtol=0, atol=1e-12)
            for p, p1 in zip(ph, ph1):
                torch.testing.assert_close(p, p1, rtol=0, atol=1e-12)
        torch.testing.assert_close(got_score, score, rtol=1e-13, atol=1e-9)
    assert torch.equal(res[0]["mlda_sm"][1], res[1]["mlda_sm"][1])  # every rank takes the same decision


def test_two_process_joint_program_follows_one_process(two_process_results):
    """fit_data_parallel: every rank's share of each global minibatch, gradients summed: with no
    sampled latent the 2-process fit is the 1-process one to rounding."""
    _, res = two_process_results
    params, trans, losses = _fit_joint(False)
    for r in res:
        p2, t2, l2 = r["joint"]
        for k in params:
            torch.testing.assert_close(p2[k], params[k], rtol=0, atol=1e-9)
        torch.testing.assert_close(t2, trans, rtol=0, atol=1e-9)
        np.testing.assert_allclose(l2, losses, rtol=1e-10)
    assert abs(losses[-1] - losses[0]) > 1e-3  # it moved


def test_two_process_kmeans_start_sees_every_cluster_of_ordered_data(two_process_results):
    """The sharded k-means start samples each shard at random: on data whose two clusters alternate
    (every second point of a cyclic order) it still separates them."""
    _, res = two_process_results
    for r in res:
        lab, a = r["kmeans"]
        even = (torch.arange(len(lab)) + a) % 2 == 0
        assert len(set(lab[even].tolist())) == 1 and len(set(lab[~even].tolist())) == 1
        assert lab[even][0] != lab[~even][0]


@pytest.fixture(scope="module")
def joint_shard_results(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("joint2"))
    return _spawn(_joint_shard_worker, tmp, "joint")


@pytest.mark.parametrize("with_mm", [True, False], ids=["gmm_chain", "gmm_uneven_shards"])
def test_two_process_shard_holding_joint_program_follows_one_process(joint_shard_results, with_mm):
    """Each rank builds the program on its rows only (distributed.sharded): every rank's members of
    the same global minibatches, gradients of the global parameters summed: with no sampled latent
    the 2-process fit is the 1-process one to rounding (shards of 70 rows = 7 chunks of the chain;
    131 points: shards of 66 and 65), and rank 0 gathers the whole posterior in row order (the
    chain's by the sharded forward-backward)."""
    params, post, losses, n = _fit_joint_program(with_mm)
    r0, r1 = joint_shard_results
    assert [r0[with_mm][3], r1[with_mm][3]] == ([70, 70] if with_mm else [66, 65])  # each holds its rows
    assert r1[with_mm][1] is None  # rank 0 alone gets the outputs
    np.testing.assert_allclose(r0[with_mm][1], post.numpy(), rtol=0, atol=1e-9)
    for r in (r0, r1):
        p2, _, l2, _ = r[with_mm]
        for k in params:
            torch.testing.assert_close(p2[k], params[k], rtol=0, atol=1e-9)
        np.testing.assert_allclose(l2, losses, rtol=1e-10)
    assert abs(losses[-1] - losses[0]) > 1e-3  # it moved


def test_collectives_route_tensors_to_the_nccl_device(monkeypatch):
    """With the nccl backend the collectives hand torch.distributed tensors on cuda:LOCAL_RANK and
    give the results back on the caller's device; with gloo the tensors stay where they are.  No
    GPU here: the routing helper is checked on its own, then the collectives with a stand-in
    device ('meta') and fake collectives that record the device they were given."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(sd, "_backend", lambda: "nccl")
    assert sd.comm_device() == torch.device("cuda", 1)
    monkeypatch.setattr(sd, "_backend", lambda: "gloo")
    assert sd.comm_device() is None
    seen = []

    def fake_all_reduce(t, op=None):
        seen.append(("all_reduce", t.device))

    def fake_all_gather(parts, t):
        seen.append(("all_gather", t.device))
        for p in parts:
            p.copy_(t) if t.device.type != "meta" else None

    def fake_broadcast(t, src):
        seen.append(("broadcast", t.device))

    monkeypatch.setattr(sd.dist, "all_reduce", fake_all_reduce)
    monkeypatch.setattr(sd.dist, "all_gather", fake_all_gather)
    monkeypatch.setattr(sd.dist, "broadcast", fake_broadcast)
    monkeypatch.setattr(sd, "_ACTIVE", sd._Shard(1, 2, (2, 2), torch.get_rng_state()))
    x = torch.arange(4.0).view(2, 2)
    # gloo: CPU tensors go in and come out as they are
    assert sd.all_reduce_sum(x).device.type == "cpu" and sd.all_gather_same(x).shape == (2, 2, 2)
    assert {d.type for _, d in seen} == {"cpu"}
    seen.clear()
    # nccl: every collective is given the process's device; the result comes back to the caller's
    monkeypatch.setattr(sd, "comm_device", lambda: torch.device("meta"))
    back = []
    monkeypatch.setattr(sd, "_from_comm", lambda t, device: back.append((t.device, device)) or  # sizes: 2 rows
                        torch.full(t.shape, 2 if t.dtype == torch.int64 else 0, dtype=t.dtype, device=device))
    outs = [sd.all_reduce_sum(x), sd.all_reduce_tensors([x, x[0]])[0], sd.all_gather_same(x), sd.gather_rows(x)]
    sd.all_reduce_max(1.0)
    sd.broadcast_([x.clone()])
    assert [k for k, _ in seen] == ["all_reduce", "all_reduce", "all_gather", "all_gather", "all_gather",
                                    "all_reduce", "broadcast"]
    assert all(d.type == "meta" for _, d in seen), seen
    assert all(o.device.type == "cpu" for o in outs)
    assert back and all(src.type == "meta" and dst.type == "cpu" for src, dst in back)


def test_two_process_joint_model_pretraining_follows_one_process(joint_shard_results):
    """JointModel.pretrain on a shard-holding program (with a chain: the program's units are
    chunks, the pretraining's are images): every rank's members of the same global minibatches,
    network gradients summed: the 1-process pretraining to float32 rounding."""
    losses, enc = _pretrain_joint_model()
    for r in joint_shard_results:
        l2, enc2 = r["pretrain"]
        np.testing.assert_allclose(l2, losses, rtol=1e-5)
        for p, q in zip(enc2, enc):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-5)


def test_encoder_scale_start_data_parallel(joint_shard_results):
    """JointModel.start_encoder_scale on shard-holding programs (each rank half of 400 points):
    the ranks end with the same scale, the ELBO optimum of test_joint's linear-Gaussian model."""
    (s0, best, n0), (s1, _, n1) = (r["scale"] for r in joint_shard_results)
    assert (n0, n1) == (200, 200) and torch.equal(s0, s1)
    torch.testing.assert_close(s0, best, rtol=0.03, atol=0)


@pytest.mark.slow
def test_cli_joint_distributed_under_torchrun_two_processes(tmp_path, data_dir):
    """`serket-pyro joint --mm --distributed` under torchrun (2 gloo processes, each holding half of
    the images): one report, printed by rank 0, and the same files as one process, with every
    point's rows."""
    import subprocess
    import sys

    pytest.importorskip("torch.distributed.run")
    tiny = ["joint", "--mm", "--n-points", "200", "--pretrain-epochs", "1", "--epochs", "1", "--chunk-len", "20",
            "--data-dir", data_dir]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "serket_pyro", *tiny, "--output", str(tmp_path / "one")], check=True,
                   env=env, capture_output=True)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(_free_port()), "-m", "serket_pyro", *tiny, "--distributed", "--output",
                          str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("joint fit on") == 1 and "GMM module (recog): accuracy" in run.stdout

    def files(d):
        return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)

    assert files(tmp_path / "one") == files(tmp_path / "two")
    assert np.loadtxt(tmp_path / "two" / "module002_gmm" / "Pdz_recog.txt").shape == (200, 10)
    assert np.loadtxt(tmp_path / "two" / "module003_mm" / "msg_recog.txt").shape == (200, 10)
