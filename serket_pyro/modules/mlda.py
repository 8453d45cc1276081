"""Multimodal latent Dirichlet allocation (MLDA): the Serket ``mlda`` module.

A topic model over ``N`` documents with ``K`` topics and one modality per child (vocabulary of
``V_m`` words); each child's message (counts or class probabilities) is turned into tokens
(``token_rule``).  Generative model (:meth:`MLDA.model`)::

    theta_d            ~ Dirichlet(alpha, ..., alpha)       d = 1..N       topic proportions (K,)
    phi_mk             ~ Dirichlet(beta, ..., beta)         m, k           topic-word dist.  (V_m,)
    for each token i of modality m in document d:
        z_i            ~ Categorical(theta_d)                              the topic site "z_m"
        factor  log b[d, z_i]                               the parent's backward message (bias)
        w_i | z_i      ~ Categorical(phi_m[z_i])                           observed word "w_m"

The parent's message is a potential on every token's topic without per-token renormalisation, as
in the original's sampler and in :mod:`serket_pyro.modules.gmm`.

Inference (:meth:`MLDA.update`) is a blocked, uncollapsed Gibbs sampler vectorised over all tokens
(the original's collapsed sampler [3]_ visits them one by one): the topic counts of every
(document, word) entry from their exact multinomial, then all ``theta_d`` and ``phi_mk`` from
their Dirichlet conditionals; chains warm-start from the previous update's draw.  ``theta_`` and
``phi_`` are Rao-Blackwellised means over the last ``n_average`` sweeps.  Messages that must
leave some evidence out (forward without the parent's bias, backward to child ``m`` without
modality ``m``) fold documents in with ``phi_`` fixed [4]_ (:func:`fold_in`).  The README's design
notes give the token rules, the messages and the files written.

References
----------
.. [1] D. M. Blei, A. Y. Ng, M. I. Jordan, "Latent Dirichlet allocation", JMLR 3, 2003.
.. [2] T. Nakamura, T. Nagai, N. Iwahashi, "Grounding of word meanings in multimodal concepts
   using LDA", IROS 2009; Nakamura, Nagai, Taniguchi, "SERKET", Front. Neurorobot. 12:25, 2018.
.. [3] T. L. Griffiths, M. Steyvers, "Finding scientific topics", PNAS 101, 2004.
.. [4] H. M. Wallach et al., "Evaluation methods for topic models", ICML 2009.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from typing import NamedTuple, Sequence

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from .. import distributed as _dist
from ..messages import ClassProbs, Message, PointMessage
from ..module import Module
from ..original_api import MLDA_API
from ..validation import check_category, check_device, check_memory, check_positive_float, check_positive_int

__all__ = ["MLDA", "to_token_counts", "fold_in", "TOKEN_RULES"]

#: ways of turning a child's row into token counts (see the module docstring)
TOKEN_RULES = ("largest_remainder", "fractional", "original")
#: tokens per document for a ClassProbs child when no count modality sets the scale
DEFAULT_CLASS_TOKENS = 100
#: dtype of the per-token cumulative topic weights in the z-step (state and counts are float64)
_DRAW_DTYPE = torch.float32


# ----------------------------------------------------------------------------------- tokens
def to_token_counts(x, weight=None, rule: str = "largest_remainder") -> torch.Tensor:
    """Turn rows of non-negative counts or weights into token counts.

    Args:
        x: ``(N, V)`` non-negative finite values (negative values are set to 0 only by
            ``rule="original"``; the other rules expect them to be checked before).
        weight: tokens per row (a positive number), or ``None`` for the raw counts.
        rule: ``"largest_remainder"``, ``"fractional"`` or ``"original"`` (module docstring).

    Returns:
        ``(N, V)`` float64 counts: integers for ``"largest_remainder"`` and ``"original"``, reals
        for ``"fractional"``.  All-zero rows stay all zero.  With a ``weight``, every non-empty
        row sums to exactly ``round(weight)`` (largest remainder), ``weight`` (fractional), or at
        most ``weight`` (original: truncation).
    """
    if rule not in TOKEN_RULES:
        raise ValueError(f"token rule must be one of {TOKEN_RULES}, got {rule!r}")
    x = torch.as_tensor(x).to(torch.float64)
    if x.dim() != 2:
        raise ValueError(f"counts must be 2-D (N, V), got shape {tuple(x.shape)}")
    if rule == "original":
        x = x.clamp_min(0.0)
        if weight is None:
            return x.floor()  # the original's cast to int32 (values are non-negative)
        s = x.sum(1, keepdim=True)
        s = torch.where(s == 0, torch.ones_like(s), s)
        return (x / s * float(weight)).floor()
    s = x.sum(1, keepdim=True)
    if rule == "fractional":
        if weight is None:
            return x.clone()
        return torch.where(s > 0, x / s.clamp_min(torch.finfo(x.dtype).tiny) * float(weight), torch.zeros_like(x))
    # largest remainder (Hamilton): floor of the quota, then one more token for the largest remainders
    if weight is None:
        if bool((x == x.round()).all()):
            return x.clone()  # integer counts are kept as they are
        total = s.round()
    else:
        total = torch.where(s > 0, torch.full_like(s, float(round(float(weight)))), torch.zeros_like(s))
    quota = torch.where(s > 0, x / s.clamp_min(torch.finfo(x.dtype).tiny) * total, torch.zeros_like(x))
    base = quota.floor()
    deficit = (total.squeeze(1) - base.sum(1)).round().long().clamp_min(0)  # (N,)
    if not bool((deficit > 0).any()):
        return base
    # rank the words present in each row by (remainder descending, word index ascending)
    nz = (x > 0).nonzero()
    doc, word = nz[:, 0], nz[:, 1]  # row-major: sorted by document, then word
    rem = (quota - base)[doc, word]
    perm = torch.sort(rem, descending=True, stable=True).indices
    perm = perm[torch.sort(doc[perm], stable=True).indices]
    d = doc[perm]
    start = torch.cumsum(torch.bincount(d, minlength=x.shape[0]), 0) - torch.bincount(d, minlength=x.shape[0])
    rank = torch.arange(d.shape[0], device=x.device) - start[d]
    take = perm[rank < deficit[d]]
    base[doc[take], word[take]] += 1.0
    return base


class _Modality(NamedTuple):
    """Token layout of one modality (all index tensors int64).

    Non-zero entries ``(doc, word)`` are ordered: first the ``E1`` entries holding exactly one
    whole token, then the entries with two or more, then those with a partial token only.
    Whole tokens: the first ``E1`` are the one-token entries (token i = entry i); the remaining
    ``T - E1`` belong to entries ``tok_entry`` (indices into the entries).  Partial tokens (real
    counts only): one per entry with a fractional part, ``part_entry`` and weight ``part_weight``.
    """

    N: int
    V: int
    doc: torch.Tensor  # (E,)
    word: torch.Tensor  # (E,)
    count: torch.Tensor  # (E,) float64, whole + fractional
    E1: int
    tok_entry: torch.Tensor  # (T,) entry of every whole token (the first E1 are arange(E1))
    tok_doc: torch.Tensor  # (T,)
    tok_word: torch.Tensor  # (T,)
    part_entry: torch.Tensor  # (P,)
    part_weight: torch.Tensor  # (P,) float64 in (0, 1)
    doc_total: torch.Tensor  # (N,) float64 tokens per document

    @classmethod
    def build(cls, counts: torch.Tensor) -> "_Modality":
        N, V = counts.shape
        nz = (counts > 0).nonzero()
        doc, word = nz[:, 0], nz[:, 1]
        c = counts[doc, word]
        whole = c.floor()
        frac = c - whole
        group = torch.where(whole == 1, 0, torch.where(whole >= 2, 1, 2))
        order = torch.sort(group, stable=True).indices
        doc, word, c, whole, frac = doc[order], word[order], c[order], whole[order], frac[order]
        E1 = int((whole == 1).sum())
        tok_entry = torch.repeat_interleave(torch.arange(doc.shape[0], device=counts.device), whole.long())
        part_entry = (frac > 0).nonzero().squeeze(1)
        return cls(N, V, doc, word, c, E1, tok_entry, doc[tok_entry], word[tok_entry], part_entry,
                   frac[part_entry], counts.sum(1))

    @property
    def n_tokens(self) -> float:
        return float(self.count.sum())


# ----------------------------------------------------------------------------------- kernels
def _dirichlet(concentration: torch.Tensor) -> torch.Tensor:
    """One draw of ``Dirichlet(concentration)`` along the last axis (Gamma normalisation, tiny floor
    so that a small concentration never gives an all-zero row)."""
    g = torch.distributions.Gamma(concentration, torch.ones_like(concentration)).sample()
    g = g.clamp_min(torch.finfo(g.dtype).tiny)
    return g / g.sum(-1, keepdim=True)


def _inverse_cdf(cdf: torch.Tensor) -> torch.Tensor:
    """One draw per row of unnormalised cumulative weights ``cdf (C, T, K)``: ``(C, T)`` topics.

    ``z = #{k < K-1: F_k <= u}``, ``u ~ U[0, F_K)``, i.e. ``F_{z-1} <= u < F_z``: a topic of zero
    weight is never drawn."""
    u = torch.rand(cdf.shape[:-1], dtype=cdf.dtype, device=cdf.device).mul_(cdf[..., -1])
    below = cdf[..., :-1] <= u.unsqueeze(-1)
    if cdf.shape[-1] <= 255:  # a byte sum is several times faster than the default int64 one
        return below.view(torch.uint8).sum(-1, dtype=torch.uint8).long()
    return below.sum(-1)


def _draw_topics(tb: torch.Tensor, phi_t: torch.Tensor, mod: _Modality):
    """``z | theta, phi, bias`` for every token of one modality, for ``C`` independent chains.

    Args:
        tb: ``(C, N, K)`` proportional to ``theta_dk * b_dk`` (any positive scale per document,
            best with the largest entry 1).
        phi_t: ``(C, V, K)`` proportional to ``phi_kw`` (transposed; any positive scale per word,
            best with the largest entry 1).
        mod: the modality's tokens.

    Returns:
        ``(z_whole (C, T), z_part (C, P))``: topics of the whole tokens (in ``mod.tok_*`` order)
        and of the partial tokens (``mod.part_*``).

    The cumulative weights are computed in float32 (``_DRAW_DTYPE``); should every topic of some
    token underflow there, the modality is redone in the dtype of ``tb``.  Rows of K topics are
    gathered (``index_select`` along the entries), the fast layout for a CPU gather.
    """
    C = tb.shape[0]
    dev = tb.device
    if mod.doc.shape[0] == 0:
        empty = torch.zeros(C, 0, dtype=torch.long, device=dev)
        return empty, empty
    for dtype in dict.fromkeys((_DRAW_DTYPE, tb.dtype)):
        w = tb.to(dtype).index_select(1, mod.doc)
        w.mul_(phi_t.to(dtype).index_select(1, mod.word))  # (C, E, K) entry weights theta * b * phi
        cdf = w.cumsum(-1)
        if bool((cdf[..., -1] > 0).all()):  # weights are at most 1: no overflow; NaN fails too
            break
    else:
        raise FloatingPointError("MLDA: a token has zero weight for every topic (underflow); "
                                 "increase alpha or beta")
    z1 = _inverse_cdf(cdf[:, : mod.E1])
    if mod.tok_entry.shape[0] > mod.E1:
        z2 = _inverse_cdf(cdf.index_select(1, mod.tok_entry[mod.E1:]))
        z_whole = torch.cat([z1, z2], dim=-1)
    else:
        z_whole = z1
    if mod.part_entry.shape[0]:
        # a partial token of weight r has topic probabilities ~ (theta b phi)^r
        lw = w.index_select(1, mod.part_entry).to(torch.float64).log() * mod.part_weight.unsqueeze(-1)
        lw = lw - lw.amax(-1, keepdim=True)
        z_part = _inverse_cdf(lw.exp().cumsum(-1))
    else:
        z_part = torch.zeros(C, 0, dtype=torch.long, device=dev)
    return z_whole, z_part


def _count_topics(z_whole, z_part, mod: _Modality, K: int):
    """Topic counts ``n_dk (C, N, K)`` and ``n_kw (C, K, V)`` (float64, weighted by partial tokens)."""
    C = z_whole.shape[0]
    N, V = mod.N, mod.V
    dev = z_whole.device
    chain = torch.arange(C, device=dev).unsqueeze(1)
    idx_dk = ((chain * N + mod.tok_doc) * K + z_whole).reshape(-1)
    idx_kw = ((chain * K + z_whole) * V + mod.tok_word).reshape(-1)
    ndk = torch.bincount(idx_dk, minlength=C * N * K).to(torch.float64)
    nkw = torch.bincount(idx_kw, minlength=C * K * V).to(torch.float64)
    if z_part.shape[1]:
        pdoc, pword = mod.doc[mod.part_entry], mod.word[mod.part_entry]
        wts = mod.part_weight.expand(C, -1).reshape(-1)
        ndk += torch.bincount(((chain * N + pdoc) * K + z_part).reshape(-1), weights=wts, minlength=C * N * K)
        nkw += torch.bincount(((chain * K + z_part) * V + pword).reshape(-1), weights=wts, minlength=C * K * V)
    return ndk.view(C, N, K), nkw.view(C, K, V)


def _entry_topic_counts(z_whole, z_part, mod: _Modality, K: int) -> torch.Tensor:
    """Whole-token topic counts per non-zero entry, ``(C, E, K)`` (for tests and diagnostics)."""
    C, E = z_whole.shape[0], mod.doc.shape[0]
    chain = torch.arange(C, device=z_whole.device).unsqueeze(1)
    idx = ((chain * E + mod.tok_entry) * K + z_whole).reshape(-1)
    return torch.bincount(idx, minlength=C * E * K).view(C, E, K)


def _gibbs_sweep(theta, phis, mods: Sequence[_Modality], bias, alpha: float, beta: float,
                 fixed_phi: bool = False, return_topics: bool = False):
    """One blocked Gibbs sweep: ``z | theta, phi, b``; ``theta | z``; ``phi | z``.

    Args:
        theta: ``(C, N, K)`` float64 current draw (``C`` independent chains).
        phis: per modality ``(C, K, V_m)`` float64 current draws.
        mods: token layouts, one per modality.
        bias: ``(N, K)`` parent message probabilities, or ``None`` (uniform).
        alpha, beta: symmetric Dirichlet concentrations.
        fixed_phi: keep ``phis`` (recognition with learned topics).
        return_topics: also return the ``(z_whole, z_part)`` of every modality.

    Returns:
        ``(theta, phis, ndk (C, N, K), nkws [(C, K, V_m)])`` after the sweep, where the counts are
        those of the topics drawn in this sweep (``theta`` and ``phis`` are drawn given them).
    """
    tb = theta if bias is None else theta * bias
    tb = tb / tb.amax(-1, keepdim=True)  # (C, N, K), largest entry 1 per document
    K = theta.shape[-1]
    ndk = torch.zeros_like(theta)
    nkws, topics = [], []
    for phi, mod in zip(phis, mods):
        ph = (phi / phi.amax(-2, keepdim=True)).transpose(-1, -2).contiguous()  # (C, V, K)
        with _dist.local_rng():  # the shard's own stream (a sharded fit)
            zw, zp = _draw_topics(tb, ph, mod)
        n_dk, n_kw = _count_topics(zw, zp, mod, K)
        ndk += n_dk
        nkws.append(n_kw)
        topics.append((zw, zp))
    with _dist.local_rng():  # documents are the shard's own
        theta = _dirichlet(alpha + ndk)
    if not fixed_phi:
        nkws = _dist.all_reduce_tensors(nkws)  # topic-word counts of every rank's documents
        phis = [_dirichlet(beta + n_kw) for n_kw in nkws]
    out = (theta, phis, ndk, nkws)
    return out + (topics,) if return_topics else out


def log_collapsed_joint(ndk: torch.Tensor, nkws: Sequence[torch.Tensor], alpha: float, beta: float,
                        bias=None) -> torch.Tensor:
    """``log p(w, z)`` with ``theta`` and ``phi`` integrated out, per chain (nats).

    ``sum_d [log B(alpha + n_d) - log B(alpha)] + sum_mk [log B(beta + n_mk) - log B(beta)]
    + sum_dk n_dk log b_dk`` (``B`` the multivariate Beta function; Griffiths and Steyvers 2004,
    eq. 2-3), the density the sampler targets, up to a constant, as a function of the topics.

    Args:
        ndk: ``(C, N, K)`` topic counts per document; nkws: per modality ``(C, K, V_m)``.
        bias: ``(N, K)`` parent message probabilities or ``None``.
    Returns:
        ``(C,)``.
    """

    def log_beta_ratio(n, a):  # log B(a + n) - log B(a) along the last axis
        V = n.shape[-1]
        return ((n + a).lgamma().sum(-1) - V * math.lgamma(a)
                + math.lgamma(V * a) - (n.sum(-1) + V * a).lgamma())

    out = log_beta_ratio(ndk, alpha).sum(-1)
    for n_kw in nkws:
        out = out + log_beta_ratio(n_kw, beta).sum(-1)
    if bias is not None:
        out = out + (ndk * bias.clamp_min(torch.finfo(bias.dtype).tiny).log()).sum((-1, -2))
    return out


def _global_log_collapsed_joint(ndk: torch.Tensor, nkws: Sequence[torch.Tensor], alpha: float, beta: float,
                                bias=None) -> torch.Tensor:
    """:func:`log_collapsed_joint` of every rank's documents in a sharded fit (``ndk`` and
    ``bias`` this rank's documents, ``nkws`` the all-reduced counts of a sweep): the documents'
    terms summed over the ranks (one all-reduce of ``C`` numbers), so that every rank scores the
    chains alike.  :func:`log_collapsed_joint` in one process."""
    if not _dist.is_sharded():
        return log_collapsed_joint(ndk, nkws, alpha, beta, bias)
    docs = log_collapsed_joint(ndk, [], alpha, beta, bias)
    return _dist.all_reduce_sum(docs) + log_collapsed_joint(ndk[..., :0, :], nkws, alpha, beta)


def _restricted_split(hists: Sequence[torch.Tensor], alpha: float, beta: float, sweeps: int = 20) -> torch.Tensor:
    """Split documents in two by a 2-topic MLDA on them alone (the restricted Gibbs sampling of
    Jain and Neal 2004's split proposal).

    Args:
        hists: per modality ``(n, V_m)`` token counts of the documents to split.
    Returns:
        ``(n,)`` bool mask of the documents whose second topic dominates.
    """
    mods = [_Modality.build(h) for h in hists]
    n = hists[0].shape[0]
    dev, f64 = hists[0].device, hists[0].dtype
    # start from a random half each, so the two topics differ from the first sweep
    theta = torch.full((1, n, 2), 0.25, dtype=f64, device=dev)
    with _dist.local_rng():  # a sharded fit: this rank's documents
        theta[0, torch.arange(n, device=dev), torch.randint(2, (n,), device=dev)] = 0.75
    phis = [_dirichlet(torch.full((1, 2, h.shape[1]), 1.0, dtype=f64, device=dev)) for h in hists]
    for _ in range(sweeps):
        theta, phis, _, _ = _gibbs_sweep(theta, phis, mods, None, alpha, beta)
    return theta[0, :, 1] > theta[0, :, 0]


def _split_merge_proposals(theta: torch.Tensor, phis, hists: Sequence[torch.Tensor], alpha: float, beta: float,
                           n_split: int = 3):
    """Split-merge proposals for the topics (Jain and Neal, J. Comput. Graph. Stat. 13, 2004;
    Ueda, Nakano, Ghahramani, Hinton, Neural Computation 12, 2000).

    A Gibbs sampler moves one token at a time, so it keeps two digits in one topic and another
    digit split over two topics when each topic is locally stable (measured on VAE+GMM+MLDA:
    "four" and "nine" shared a topic while "five" had two).  A proposal merges the two most similar
    topics ``a, b`` (smallest mean Hellinger distance of their word distributions over the
    modalities) into ``a``, and gives ``b`` to one half of the documents of a large topic ``k``,
    split by a 2-topic MLDA run on those documents alone (:func:`_restricted_split`).  ``phi_b`` and
    ``phi_k`` are re-estimated from the two halves' words.

    Args:
        theta: ``(N, K)``, phis: per modality ``(K, V_m)``: the chain's current draw.
        hists: per modality ``(N, V_m)`` float64 token counts (:meth:`MLDA.token_counts`).
    Returns:
        list of ``(theta (N, K), [phi_m (K, V_m)])`` starting points (at most ``n_split``).
    """
    N, K = theta.shape
    if K < 3:
        return []
    dist_ = torch.zeros(K, K, dtype=theta.dtype, device=theta.device)
    for phi in phis:
        r = phi.clamp_min(0).sqrt()
        dist_ += (1 - (r @ r.T).clamp(max=1)).clamp_min(0).sqrt()
    dist_ = dist_ / len(phis)
    owner = theta.argmax(1)
    size = _dist.all_reduce_sum(torch.bincount(owner, minlength=K))  # a sharded fit: every rank's documents
    out = []
    for k in torch.argsort(size, descending=True, stable=True)[:n_split].tolist():
        docs = (owner == k).nonzero().squeeze(1)
        if int(size[k]) < 4:
            continue
        d = dist_.clone()
        d[k, :] = d[:, k] = float("inf")
        d.fill_diagonal_(float("inf"))
        a, b = divmod(int(d.argmin()), K)
        half = docs[_restricted_split([h[docs] for h in hists], alpha, beta)]
        n_half = int(_dist.all_reduce_sum(torch.tensor([half.numel()]))[0])
        if n_half == 0 or n_half == int(size[k]):
            continue
        th = theta.clone()
        th[:, a] += th[:, b]
        th[:, b] = 0.0
        th[half, b], th[half, k] = th[half, k], th[half, b]
        th = (th + 1e-3) / (th + 1e-3).sum(1, keepdim=True)
        rest = docs[~torch.isin(docs, half)]
        new_phis = []
        for phi, h in zip(phis, hists):
            ph = phi.clone()
            ph[a] = (phi[a] + phi[b]) / 2
            halves = _dist.all_reduce_tensors([h[half].sum(0), h[rest].sum(0)])  # every rank's documents
            for t, n_w in zip((b, k), halves):
                c = n_w + beta
                ph[t] = c / c.sum()
            new_phis.append(ph)
        out.append((th, new_phis))
    return out


def fold_in(mods: Sequence[_Modality], phis: Sequence[torch.Tensor], alpha: float, bias=None,
            tol: float = 1e-8, max_iter: int = 1000) -> torch.Tensor:
    """Topic proportions of every document from the tokens of ``mods`` with the topics fixed.

    The fixed point of the EM map ``theta_dk <- (alpha + E[n_dk]) / (L_d + K alpha)`` with
    ``E[n_dk] = sum_m sum_w c_dmw r_dmwk``, ``r_dmwk ~ theta_dk b_dk phi_mkw`` (module docstring),
    i.e. the unique maximiser of ``sum c log(sum_k theta_k b_k phi_kw) + alpha sum_k log theta_k``,
    from the uniform start.  Iterations are accelerated per document by SQUAREM (Varadhan and
    Roland, "Simple and globally convergent methods for accelerating the convergence of any EM
    algorithm", Scand. J. Statist. 35, 2008; scheme S3 with an EM stabilisation step), until the
    largest change of one EM step is below ``tol``.

    Args:
        mods: token layouts of the modalities to use (may hold no tokens: the result is uniform).
        phis: their ``(K, V_m)`` topic-word distributions.
        alpha: Dirichlet concentration (> 0).
        bias: ``(N, K)`` parent message probabilities, or ``None`` (no bias).
        tol: convergence threshold on the largest change of a probability.
        max_iter: most SQUAREM steps (3 EM maps each).

    Returns:
        ``(N, K)`` float64, rows sum to 1.
    """
    if not mods:
        raise ValueError("fold_in needs at least one modality (for the number of documents)")
    N = mods[0].N
    K = phis[0].shape[0]
    dev = phis[0].device
    out = torch.full((N, K), 1.0 / K, dtype=torch.float64, device=dev)
    used = [(m, p) for m, p in zip(mods, phis) if m.doc.shape[0] > 0]
    if not used:
        return out
    # the documents are independent given phi: iterate on the not yet converged ones only
    docs = torch.arange(N, device=dev)  # active documents (positions in ``out``)
    denom = sum(m.doc_total for m, _ in used).unsqueeze(1) + K * alpha  # (n, 1)
    b = None if bias is None else bias.to(torch.float64)
    # per modality: document (position among the active ones) of every entry, phi_mkw per entry
    # (E, K) and the counts (E, 1), fixed during the iterations
    pre = [(m.doc, p.T.to(torch.float64).index_select(0, m.word), m.count.unsqueeze(1)) for m, p in used]
    theta = out.clone()

    def em(th):
        tb = th if b is None else th * b
        acc = torch.zeros_like(th)
        for doc, phw, c in pre:
            w = tb.index_select(0, doc).mul_(phw)
            acc.index_add_(0, doc, w.mul_(c / w.sum(1, keepdim=True)))
        return (alpha + acc) / denom

    tiny = torch.finfo(torch.float64).tiny
    for _ in range(max_iter):
        t1 = em(theta)
        t2 = em(t1)
        r = t1 - theta
        v = t2 - t1 - r
        step = -(r.pow(2).sum(1, keepdim=True) / v.pow(2).sum(1, keepdim=True).clamp_min(tiny)).sqrt()
        step = step.clamp(max=-1.0)  # -1 is plain EM (t2)
        x = theta - 2 * step * r + step.pow(2) * v
        bad = ~(x > 0).all(1, keepdim=True) | ~torch.isfinite(x).all(1, keepdim=True)
        x = torch.where(bad, t2, x)
        theta = em(x)
        delta = (theta - x).abs().amax(1)  # (n,) change of one EM step
        done = delta < tol
        if bool(done.all()):
            out[docs] = theta
            break
        if int(done.sum()) * 4 >= docs.shape[0]:  # shrink the problem when a quarter has converged
            out[docs[done]] = theta[done]
            keep = ~done
            pos = torch.full((docs.shape[0],), -1, dtype=torch.long, device=dev)
            pos[keep] = torch.arange(int(keep.sum()), device=dev)
            new_pre = []
            for doc, phw, c in pre:
                e = keep[doc]
                new_pre.append((pos[doc[e]], phw[e], c[e]))
            pre = new_pre
            docs, theta, denom = docs[keep], theta[keep], denom[keep]
            b = None if b is None else b[keep]
    else:
        out[docs] = theta
    return out / out.sum(1, keepdim=True)


# ------------------------------------------------------------------------------------ module
class MLDA(Module):
    """Multimodal LDA with ``K`` topics (classes) over one modality per child.

    Parameters
    ----------
    K : int
        Number of topics (integer >= 1).
    weights : list of float or None, optional
        Tokens per document for each child, in ``connect`` order (the original's ``[200, 200]``), or
        ``None`` / ``None`` entries for the default (module docstring). Its length must equal the number
        of children (checked in :meth:`update`).
    itr : int, default 100
        Gibbs sweeps per :meth:`update` (>= 1; original 100).
    category : array_like of int, shape (N,), optional
        ``(N,)`` true labels, used only to score (``acc_learn.txt``, ``metrics_``).
    alpha : float, default 1.0
        Symmetric Dirichlet concentration of the topic proportions (> 0; original 1).
    beta : float, default 1.0
        Symmetric Dirichlet concentration of the topic-word distributions (> 0; original 1).
    token_rule : {'largest_remainder', 'fractional', 'original'}, default 'largest_remainder'
        ``"largest_remainder"`` (default), ``"fractional"`` or ``"original"``.
    forward : {'exclusive', 'original'}, default 'exclusive'
        ``"exclusive"`` (fold-in without the parent's message, default) or ``"original"`` (``theta_``,
        which includes it).
    backward : {'exclusive', 'original'}, default 'exclusive'
        ``"exclusive"`` (prediction from the other modalities and the parent, default) or ``"original"``
        (``theta_ @ phi_m``, includes the child's own evidence).
    n_average : int, default 10
        Number of final sweeps whose Rao-Blackwellised estimates are averaged (clipped to ``itr``; 1:
        last sweep only, the original's estimator).
    split_merge : int, default 3
        After the ``itr`` sweeps, up to this many split-merge moves (:func:`_split_merge_proposals`):
        the chain and up to three proposals (merge two similar topics, split a large one in two) each
        run ``max(itr // 5, n_average)`` more sweeps, and the one with the highest collapsed log joint
        (:func:`log_collapsed_joint`) goes on; the moves stop when the chain itself wins.  A search over
        modes, not part of the MCMC kernel (as the GMM's ``message_init``); skipped in updates with a
        parent's message, which already moves whole topics.  0 turns the moves off.  Why: Gibbs moves
        single tokens and cannot separate two merged digits; the moves raise VAE+GMM+MLDA's accuracy
        at about twice the time of an update (``benchmarks/tutorials.py --mlda-split-merge 0``).
    split_merge_screen : bool, default False
        Run each round of moves by successive halving (:meth:`_screened_round`): the proposals run
        half the round's sweeps, only the most probable one the rest, and it is compared with the
        current chain's last ``n_average`` sweeps instead of running the chain on (half the moves'
        sweeps).  Off by default: on the tutorial's speech it lowered the accuracy on two of three
        seeds (README, "MLDA against tomotopy").
    parent_weight : {'auto', 'document', 'token'}, default 'auto'
        How a parent's class message ``q`` enters a document: ``"token"`` once per token (the
        original's potential ``q_dk`` on every token's topic), ``"document"`` once per document
        (``q_dk^(1 / L_d)`` on each of its ``L_d`` tokens, i.e. ``sum_k (n_dk / L_d) log q_dk``),
        ``"auto"`` once per document for parents whose ``class_message_scope`` is
        ``"document"`` (an MLDA), once per token for the others (a Markov model, users' modules).
        Why: an MLDA parent's message is a prediction of the document's class from its other
        children, a mixture over its topics; once per token it counts as ``L_d`` independent
        pieces of evidence and outweighs the document's own words.
    save_predictions : bool, default True
        Write ``Pmdw[m]_learn.txt`` (N x V_m per modality; when larger than
        :func:`serket_pyro.output.get_text_limit` values, as for the tutorial's 3000 x 2400 speech
        histograms, ``Pmdw[m]_learn.npy`` at the top of the folder only).
    device : str or torch.device, optional
        Torch device (default CPU).
    output_root : str or os.PathLike, optional
        Folder for this module's output folder (default the global output root).
    mode : {'learn', 'recog'}, default 'learn'
        ``"learn"`` (files ``*_learn``) or ``"recog"`` (topics ``phi_`` frozen, only the documents'
        topics are sampled; files ``*_recog``; needs learned or loaded ``phi_``).
    name : str, default 'mlda'
        Short name (``module%03d_<name>``).

    Notes
    -----
    Learned state: ``theta_ (N, K)``, ``phi_`` (list of ``(K, V_m)``), posterior means (module
    docstring); the chain's last draw is kept for the warm start.  ``predictions_``: the
    ``Pmdw[m]`` of the last update (list of ``(N, V_m)``, not part of the state dict).
    """

    input_kinds = (PointMessage, ClassProbs)
    #: the class messages sent to children are predictions of each document's class as a whole
    #: (mixtures over this module's topics), applied once per document by an MLDA child
    class_message_scope = "document"
    _fitted = ("theta_", "phi_", "_theta_draw", "_phi_draw")
    _row_state = ("theta_", "_theta_draw")
    _state_rules = dict.fromkeys(_fitted, "probabilities")
    #: an observation read only by MLDA modules may be left out at recognition (all-zero counts)
    accepts_missing_observation = True
    test_args = {"K": 2, "itr": 3}
    _original_api = MLDA_API  # also MLDA(K, weights, itr, name, category, load_dir | mode), the original's order
    _model_params = ("K",)
    _original_class_file = "categories"  # the original's categories_<mode>.txt

    def _missing_width(self, i: int) -> int:
        """``Observation(None)`` as child ``i``: zero counts as wide as the learned ``phi_[i]``."""
        if self.phi_ is not None and i < len(self.phi_):
            return int(self.phi_[i].shape[-1])
        return 1

    def __init__(self, K, weights=None, itr=100, category=None, *, alpha: float = 1.0, beta: float = 1.0,
                 token_rule: str = "largest_remainder", forward: str = "exclusive", backward: str = "exclusive",
                 n_average: int = 10, split_merge: int = 3, split_merge_screen: bool = False,
                 save_predictions: bool = True, device=None,
                 output_root=None, mode: str = "learn", name: str = "mlda", parent_weight: str = "auto"):
        super().__init__(name, output_root=output_root)
        self.K = check_positive_int(K, "K (number of topics)", self.name)
        self.weights = self._check_weights(weights)
        self.itr = check_positive_int(itr, "itr", self.name)
        self.category = check_category(category, None, self.name)
        self.alpha = check_positive_float(alpha, "alpha", self.name)
        self.beta = check_positive_float(beta, "beta", self.name)
        self.token_rule = self._check_choice(token_rule, "token_rule", TOKEN_RULES)
        self.forward = self._check_choice(forward, "forward", ("exclusive", "original"))
        self.backward = self._check_choice(backward, "backward", ("exclusive", "original"))
        self.parent_weight = self._check_choice(parent_weight, "parent_weight", ("auto", "document", "token"))
        self.n_average = check_positive_int(n_average, "n_average", self.name)
        self.split_merge = check_positive_int(split_merge, "split_merge", self.name, minimum=0)
        self.split_merge_screen = bool(split_merge_screen)
        self.save_predictions = bool(save_predictions)
        self.device = check_device(device)
        self.mode = mode

        self.theta_: torch.Tensor | None = None
        self.phi_: list[torch.Tensor] | None = None
        self._theta_draw: torch.Tensor | None = None  # (N, K) last draw (warm start)
        self._phi_draw: list[torch.Tensor] | None = None
        self._token_cache: dict = {}  # child index -> (message, weight, counts, layout)
        self.predictions_: list[torch.Tensor] | None = None  # Pmdw[m] of the last update (not saved)

    # ------------------------------------------------------------------ checks
    def _check_weights(self, weights):
        if weights is None:
            return None
        if isinstance(weights, (str, bytes)) or not isinstance(weights, (Sequence, np.ndarray, torch.Tensor)):
            raise ValueError(f"{self.name}: weights must be a list with one number per child (or None), "
                             f"got {weights!r}")
        out = []
        for i, w in enumerate(list(np.asarray(weights, dtype=object).reshape(-1))):
            if w is None:
                out.append(None)
                continue
            if isinstance(w, torch.Tensor):
                w = w.item()
            if isinstance(w, bool) or not isinstance(w, numbers.Real):
                raise ValueError(f"{self.name}: weights[{i}] must be a positive number or None, got {w!r}")
            out.append(check_positive_float(w, f"weights[{i}]", self.name))
        if not out:
            raise ValueError(f"{self.name}: weights is empty")
        return out

    def _inputs(self):
        """Children's messages as ``(N, V_m)`` float64 tensors and whether each is ``ClassProbs``."""
        obs = self.get_observations()
        if self.weights is not None and len(self.weights) != len(obs):
            raise ValueError(f"{self.name}: weights has {len(self.weights)} entries but {len(obs)} children are "
                             f"connected ({', '.join(c.name for c in self.children)})")
        values, is_class = [], []
        for child, msg in zip(self.children, obs):
            if isinstance(msg, ClassProbs):
                v = msg.probs
                is_class.append(True)
            else:  # counts, a point message (input_kinds)
                v = msg.value
                is_class.append(False)
            v = torch.as_tensor(v).to(dtype=torch.float64, device=self.device)
            if v.dim() != 2:
                raise ValueError(f"{self.name}: the message from {child.name} must be 2-D (N, V), "
                                 f"got shape {tuple(v.shape)}")
            if not bool(torch.isfinite(v).all()):
                bad = int((~torch.isfinite(v)).sum())
                raise ValueError(f"{self.name}: the counts from {child.name} contain {bad} NaN or infinite value(s)")
            neg = int((v < 0).sum())
            if neg and self.token_rule != "original":
                raise ValueError(f"{self.name}: the counts from {child.name} contain {neg} negative value(s) "
                                 "(token_rule='original' sets them to 0 as the original did)")
            if neg:
                v = v.clamp_min(0.0)
            values.append(v)
        sizes = {v.shape[0] for v in values}
        if len(sizes) != 1:
            detail = ", ".join(f"{c.name}: N={v.shape[0]}" for c, v in zip(self.children, values))
            raise ValueError(f"{self.name}: children send different numbers of documents ({detail})")
        N = values[0].shape[0]
        empty = torch.stack([v.sum(1) == 0 for v in values]).all(0)
        if bool(empty.any()):
            idx = empty.nonzero().squeeze(1).tolist()
            shown = ", ".join(map(str, idx[:10])) + (" ..." if len(idx) > 10 else "")
            raise ValueError(f"{self.name}: {len(idx)} of {N} documents have all-zero counts in every modality "
                             f"(documents {shown}); a document needs tokens in at least one modality")
        return values, is_class

    def token_weights(self, values, is_class) -> list:
        """Tokens per document for each child (``None``: raw counts), after the defaults."""
        given = self.weights if self.weights is not None else [None] * len(values)
        counts_scale = [(float(_dist.global_mean(v.sum(1, keepdim=True))[0]) if _dist.is_sharded()
                         else float(v.sum(1).mean())) if w is None else w
                        for v, w, c in zip(values, given, is_class) if not c]
        default = max(1, round(sum(counts_scale))) if counts_scale else DEFAULT_CLASS_TOKENS
        return [w if w is not None else (float(default) if c else None) for w, c in zip(given, is_class)]

    def token_counts(self):
        """The children's current messages as token counts, ``[(N, V_m)]`` float64 (validated),
        and whether each child sends class probabilities."""
        counts, is_class, _ = self._tokens()
        return counts, is_class

    def _tokens(self):
        """Token counts and layouts of every child.  A child whose message is the same object as
        in the previous update (an ``Observation``) reuses its counts and layout."""
        obs = self.get_observations()
        values, is_class = self._inputs()
        weights = self.token_weights(values, is_class)
        cache = getattr(self, "_token_cache", {})
        counts, mods, new_cache = [], [], {}
        for i, (msg, v, w) in enumerate(zip(obs, values, weights)):
            hit = cache.get(i)
            if hit is not None and hit[0] is msg and hit[1] == w and hit[2].shape == v.shape:
                c, mod = hit[2], hit[3]
            else:
                c = to_token_counts(v, w, self.token_rule)
                # every token and every (document, word) entry holds K topic weights in each of
                # up to 4 chains (the chain and its split-merge proposals)
                n_tok, n_entries = float(c.sum()), int((c > 0).sum())
                check_memory(4.0 * (n_tok + n_entries) * self.K,
                             f"{n_tok:.4g} tokens of {self.children[i].name} x K={self.K} topics", self.name)
                mod = _Modality.build(c)
            counts.append(c)
            mods.append(mod)
            new_cache[i] = (msg, w, c, mod)
        self._token_cache = new_cache
        return counts, is_class, mods

    def _read_inputs(self):
        """``(token counts, whether each child sends class probabilities, modalities)``."""
        return self._tokens()

    def _read_backward(self, inputs):
        """The per-token potential ``b`` ``(N, K)`` (float64) from the parents' messages, or None.

        The product of the parents' messages, each to the power ``1 / L_d`` (``L_d`` the document's
        tokens) when it enters the document once (:meth:`_enters_once`), else as it is: once per
        token.  A message ``q`` that enters once adds ``sum_k (n_dk / L_d) log q_dk`` to the
        document's log joint, ``log q_k`` for a document all of topic ``k``."""
        N = inputs[0][0].shape[0]
        if self.get_class_backward_msg(N, self.K) is None:  # validates the product; None when flat
            return None
        L = sum(m.doc_total for m in inputs[2]).clamp_min(1.0).unsqueeze(1)
        lb = torch.zeros(N, self.K, dtype=torch.float64, device=self.device)
        for parent in self.parents:
            msg = self._backward_msgs.get(parent.name)
            if msg is not None:
                lp = msg.log_probs.to(dtype=torch.float64, device=self.device)
                lb = lb + (lp / L if self._enters_once(parent) else lp)
        return (lb - lb.logsumexp(1, keepdim=True)).exp()

    def _enters_once(self, parent) -> bool:
        """Whether ``parent``'s message enters each document once (``parent_weight``)."""
        if self.parent_weight == "auto":
            return getattr(parent, "class_message_scope", "token") == "document"
        return self.parent_weight == "document"

    # --------------------------------------------------------------- the model
    def model(self, *counts, bias=None):
        """The generative model as a Pyro submodel (see the module docstring).

        Sites: ``theta`` (N, K) in plate ``documents``; per modality ``m``: ``phi_m`` (K, V_m) in
        plate ``topics_m``; the topic ``z_m`` of every token, the factor ``bias_m`` and the
        observed word ``w_m`` in plate ``tokens_m`` (whole tokens first, then partial ones, as
        :func:`_token_list`).  Partial tokens (real counts) enter with their weight as a tensor
        ``poutine.scale``; with integer counts the ``z_m`` can be enumerated
        (``config_enumerate`` + ``TraceEnum_ELBO``), Pyro's enumeration needing a scalar scale.

        Args:
            counts: one ``(N, V_m)`` non-negative tensor of token counts per modality.
            bias: parent message, ``ClassProbs`` or ``(N, K)`` log-probabilities, or ``None``.

        Returns:
            the list of token topics ``z_m``.
        """
        counts = [torch.as_tensor(c, dtype=torch.float64, device=self.device) for c in counts]
        N, K = counts[0].shape[0], self.K
        log_b = None
        if bias is not None:
            log_b = (bias.log_probs if isinstance(bias, Message) else torch.as_tensor(bias)).to(
                dtype=torch.float64, device=self.device)
        with pyro.plate("documents", N):
            theta = pyro.sample("theta", self.joint_prior({"_": torch.zeros((), dtype=torch.float64,
                                                                             device=self.device)}))
        zs = []
        for m, c in enumerate(counts):
            V = c.shape[1]
            with pyro.plate(f"topics_{m}", K):
                phi = pyro.sample(f"phi_{m}", dist.Dirichlet(torch.full((V,), self.beta, dtype=torch.float64,
                                                                        device=self.device)))
            doc, word, weight = _token_list(c)
            # partial tokens: a tensor scale (Pyro enumerates z only under a scalar scale, i.e. for
            # integer counts)
            scaled = pyro.poutine.scale(scale=weight) if bool((weight != 1).any()) else contextlib.nullcontext()
            with pyro.plate(f"tokens_{m}", doc.shape[0]), scaled:
                z = pyro.sample(f"z_{m}", dist.Categorical(Vindex(theta)[doc]))
                if log_b is not None:
                    pyro.factor(f"bias_{m}", Vindex(log_b)[doc, z])
                pyro.sample(f"w_{m}", dist.Categorical(Vindex(phi)[z]), obs=word)
            zs.append(z)
        return zs

    # ------------------------------------------------------------ joint hooks
    #: the joint site is the documents' topic proportions ``theta`` (per-token topics summed out)
    joint_role = "latent"

    def joint_size(self) -> int:
        """``K`` topics (the site is ``theta``, ``(K,)`` on the simplex)."""
        return self.K

    def joint_params(self, child_sizes, child_values, parent_states) -> dict:
        """``phi_<i> (K, V_i)`` per child (the fitted ``phi_`` when it fits, else random
        Dirichlet(1) rows); ``state_concentration (S, K)`` under a chain/class parent with ``S``
        states (``theta | s ~ Dirichlet(state_concentration[s])``)."""
        from torch.distributions import constraints

        out = {}
        for c in self.children:
            role = getattr(c, "joint_role", None)
            if role is None or role == "class" or (role == "latent" and self._joint_has_states(c)):
                continue
            raise ValueError(f"{self.name}: in the joint program an MLDA's children must be observations "
                             f"(counts), class modules (a GMM) or modules whose site has a distribution "
                             f"per state (joint_state_dist: an MLDA), got {c.name}")
        for i, V in enumerate(child_sizes):
            if self.phi_ is not None and i < len(self.phi_) and tuple(self.phi_[i].shape) == (self.K, V):
                phi = self.phi_[i].double().cpu().clamp_min(1e-8)
            else:
                phi = torch.distributions.Dirichlet(torch.ones(V, dtype=torch.float64)).sample((self.K,)) + 1e-3
            out[f"phi_{i}"] = (phi / phi.sum(-1, keepdim=True), constraints.simplex)
        if parent_states:
            c = torch.full((int(parent_states), self.K), float(self.alpha), dtype=torch.float64)
            if int(parent_states) == self.K:
                c = c + 4.0 * torch.eye(self.K, dtype=torch.float64)
            out["state_concentration"] = (c, constraints.positive)
        return out

    def joint_local_params(self, N: int) -> dict:
        """``q_concentration (N, K)``: the documents' Dirichlet guide (``theta_`` when fitted)."""
        from torch.distributions import constraints

        if self.theta_ is not None and tuple(self.theta_.shape) == (N, self.K):
            c = 1.0 + 10.0 * self.K * self.theta_.double().cpu()
        else:
            c = 1.0 + torch.rand(N, self.K, dtype=torch.float64)
        return {"q_concentration": (c, constraints.positive)}

    def joint_prior(self, params):
        """``Dirichlet(alpha)``, the ``theta`` of :meth:`model`."""
        ref = next(iter(params.values())) if params else torch.zeros((), dtype=torch.float64)
        return dist.Dirichlet(torch.full((self.K,), float(self.alpha), dtype=ref.dtype, device=ref.device))

    def joint_state_dist(self, params, s):
        """``Dirichlet(state_concentration[s])``: the topic proportions given a parent's state."""
        return dist.Dirichlet(Vindex(params["state_concentration"])[..., s, :])

    def joint_child_dist(self, params, value, i: int):
        """Child ``i``'s tokens given ``theta``: ``p(w) = sum_k theta_k phi_kw`` (topics summed
        out); counts (an observation) as :class:`~serket_pyro.ops.token_counts.TokenCounts`, a
        class child's class as one ``Categorical`` token, and so the state of an MLDA child (one of
        its topics, which draws its ``theta`` by :meth:`joint_state_dist`)."""
        from ..ops.token_counts import TokenCategorical, TokenCounts

        probs = value @ params[f"phi_{i}"]
        if getattr(self.children[i], "joint_role", None) in ("class", "latent"):
            return TokenCategorical(probs, self._joint_class_tokens(i))
        return TokenCounts(probs)

    def joint_observed(self, i: int, data: torch.Tensor) -> torch.Tensor:
        """The counts of child ``i`` as token counts (``weights[i]`` tokens per document,
        ``token_rule``), as :meth:`update` reads them."""
        v = torch.as_tensor(data, dtype=torch.float64)
        w = None if self.weights is None else self.weights[i]
        return v if w is None else to_token_counts(v, w, self.token_rule)

    @staticmethod
    def _joint_has_states(child) -> bool:
        """Whether a ``"latent"`` child has a distribution per state (``joint_state_dist``), so
        that the MLDA's token for it is one of its states (an MLDA child: one of its topics)."""
        return type(child).joint_state_dist is not Module.joint_state_dist

    def _joint_class_tokens(self, i: int) -> float:
        """A class child's class counts as ``weights[i]`` tokens (default
        :data:`DEFAULT_CLASS_TOKENS`), as its class message does in :meth:`update`."""
        w = None if self.weights is None else self.weights[i]
        return float(DEFAULT_CLASS_TOKENS if w is None else w)

    def joint_guide(self, params, local, observed):
        """``q(theta_d) = Dirichlet(q_concentration[d])`` (a local guide per document)."""
        return dist.Dirichlet(local["q_concentration"])

    def joint_to_module(self, params, posterior) -> None:
        """``theta_`` (the guide's means), ``phi_``; the chain's state is the same point."""
        theta = posterior.detach().to(dtype=torch.float64, device=self.device)
        phis = [params[f"phi_{i}"].detach().to(dtype=torch.float64, device=self.device).clone()
                for i in range(len(self.children))]
        self.theta_, self.phi_ = theta, phis
        self._theta_draw, self._phi_draw = theta.clone(), [p.clone() for p in phis]

    # -------------------------------------------------------------- inference
    def _initial_state(self, N, vocab):
        """Warm start (last draw of the previous update) or uniform ``theta, phi``."""
        dev, f64 = self.device, torch.float64
        if self._theta_draw is not None and self._theta_draw.shape == (N, self.K):
            theta = self._theta_draw
        else:
            theta = torch.full((N, self.K), 1.0 / self.K, dtype=f64, device=dev)
        if self.mode == "recog":
            phis = list(self.phi_)
        elif self._phi_draw is not None and [p.shape[1] for p in self._phi_draw] == vocab:
            phis = self._phi_draw
        else:
            phis = [torch.full((self.K, V), 1.0 / V, dtype=f64, device=dev) for V in vocab]
        return theta.unsqueeze(0), [p.unsqueeze(0) for p in phis]

    def _run(self, theta, phis, mods, bias, sweeps, score=False):
        """``sweeps`` sweeps of ``C`` chains; returns the last draw, the Rao-Blackwellised estimates
        of every chain averaged over the last ``n_average`` sweeps and (``score=True``) the mean
        collapsed log joint over those sweeps, ``(C,)``, else ``None``."""
        K = self.K
        fixed = self.mode == "recog"
        n_avg = min(self.n_average, sweeps)
        theta_acc = torch.zeros_like(theta)
        phi_acc = [torch.zeros_like(p) for p in phis]
        total = torch.zeros(theta.shape[0], dtype=torch.float64, device=theta.device) if score else None
        for s in range(sweeps):
            theta, phis, ndk, nkws = _gibbs_sweep(theta, phis, mods, bias, self.alpha, self.beta, fixed_phi=fixed)
            if s >= sweeps - n_avg:
                theta_acc += (self.alpha + ndk) / (ndk.sum(-1, keepdim=True) + K * self.alpha)
                if score:
                    total += _global_log_collapsed_joint(ndk, nkws, self.alpha, self.beta, bias)
                if not fixed:
                    for acc, n_kw in zip(phi_acc, nkws):
                        acc += (self.beta + n_kw) / (n_kw.sum(-1, keepdim=True) + n_kw.shape[-1] * self.beta)
        return theta, phis, theta_acc / n_avg, [a / n_avg for a in phi_acc], (total / n_avg if score else None)

    def _sample(self, mods, bias, counts):
        """``itr`` sweeps, then up to ``split_merge`` accepted split-merge moves; sets the estimates
        and the chain's last draw."""
        N = mods[0].N
        theta, phis = self._initial_state(N, [m.V for m in mods])
        fixed = self.mode == "recog"
        moves = 0 if fixed or bias is not None else self.split_merge
        theta, phis, theta_est, phi_est, score = self._run(theta, phis, mods, bias, self.itr,
                                                           score=bool(moves) and self.split_merge_screen)
        self.split_merge_accepted_ = 0
        sweeps = max(self.itr // 5, min(self.n_average, self.itr))
        # a parent's class message (e.g. a Markov chain's) already moves whole topics, and the
        # moves would double the Markov-model tutorial's time for the same result
        # (a sharded fit: the proposals' and scores' statistics are summed over the ranks, so
        # every rank accepts the same move)
        for _ in range(moves):
            props = _split_merge_proposals(theta[0], [p[0] for p in phis], counts, self.alpha, self.beta)
            if not props:
                break
            if self.split_merge_screen:
                won = self._screened_round(props, score, mods, bias, sweeps)
                if won is None:
                    break
                theta, phis, theta_est, phi_est, score = won
                self.split_merge_accepted_ += 1
                continue
            # the current chain goes on next to the proposals, so all compete after equal sweeps
            th = torch.stack([theta[0]] + [t for t, _ in props])
            ph = [torch.stack([p[0]] + [q[m] for _, q in props]) for m, p in enumerate(phis)]
            th, ph, th_est, ph_est, sc = self._run(th, ph, mods, bias, sweeps, score=True)
            best = int(sc.argmax())
            theta, phis = th[best:best + 1], [p[best:best + 1] for p in ph]
            theta_est, phi_est = th_est[best:best + 1], [p[best:best + 1] for p in ph_est]
            if best == 0:
                break
            self.split_merge_accepted_ += 1
        self.theta_ = theta_est[0]
        if not fixed:
            self.phi_ = [p[0] for p in phi_est]
            self._phi_draw = [p[0] for p in phis]
        self._theta_draw = theta[0]

    def _screened_round(self, props, score, mods, bias, sweeps):
        """One round of split-merge moves by successive halving: every proposal runs half the
        round's sweeps, the most probable one (its collapsed log joint over its last sweeps) the
        other half, and it wins if its mean log joint over its last ``n_average`` sweeps beats the
        current chain's over its own last ones (the chain does not run on: it has already run
        that long).  Returns the winner's ``_run`` outputs (one chain), or ``None``."""
        th = torch.stack([t for t, _ in props])
        ph = [torch.stack([q[m] for _, q in props]) for m in range(len(mods))]
        half = max(sweeps // 2, 1)
        th, ph, _, _, sc = self._run(th, ph, mods, bias, half, score=True)
        best = int(sc.argmax())
        out = self._run(th[best:best + 1], [p[best:best + 1] for p in ph], mods, bias,
                        max(sweeps - half, 1), score=True)
        return out if float(out[4][0]) > float(score[0]) else None

    def _require_params(self, vocab):
        if self.phi_ is None:
            raise ValueError(f"{self.name} has no topics yet: run update() in learn mode or load_state_dict()")
        have = [p.shape[1] for p in self.phi_]
        if have != vocab:
            raise ValueError(f"{self.name}: the learned topics have vocabularies {have}, the children send {vocab}")

    def _infer(self, inputs, bias) -> None:
        """``itr`` Gibbs sweeps (and split-merge moves) of topics and documents."""
        counts, _, mods = inputs
        doc_tokens = sum(m.doc_total for m in mods)
        if bool((doc_tokens == 0).any()):
            warnings.warn(f"{self.name}: {int((doc_tokens == 0).sum())} document(s) have no tokens after the "
                          f"'{self.token_rule}' rule; their topics follow the prior", UserWarning, stacklevel=3)
        if self.mode == "recog":
            self._require_params([m.V for m in mods])
        self._sample(mods, bias, counts)

    #: recognition samples the documents' topics under the learned (frozen) ``phi_``
    _recognise = _infer

    def _forward_message(self, inputs, bias) -> ClassProbs:
        """The documents' topics from their own words (fold-in without the parent, or ``theta_``)."""
        _, is_class, mods = inputs
        return ClassProbs.from_probs(fold_in(mods, self.phi_, self.alpha) if self.forward == "exclusive"
                                     else self.theta_)

    def _backward_messages(self, inputs, bias) -> list:
        """Each modality predicted from the others and the parent (``Pmdw[m]``); an
        ``Observation`` gets nothing (a 3000 x 2400 prediction would only weigh on memory)."""
        counts, is_class, mods = inputs
        N = counts[0].shape[0]
        preds = []
        for m, phi in enumerate(self.phi_):
            if self.backward == "exclusive":
                others = [i for i in range(len(mods)) if i != m]
                if others:
                    th = fold_in([mods[i] for i in others], [self.phi_[i] for i in others], self.alpha, bias)
                else:
                    th = torch.full((N, self.K), 1.0 / self.K, dtype=torch.float64, device=self.device)
                pi = th if bias is None else th * bias
                pi = pi / pi.sum(1, keepdim=True)
            else:
                pi = self.theta_
            preds.append(pi @ phi)
        self.predictions_ = preds
        return [ClassProbs.from_probs(p) if c else (PointMessage(p) if child.learnable else None)
                for p, c, child in zip(preds, is_class, self.children)]

    def _class_probs(self, inputs, bias):
        return self.theta_

    def _write_outputs(self, w, inputs, bias) -> None:
        md = self.mode
        w.savetxt(f"theta_{md}.txt", self.theta_)
        for m, phi in enumerate(self.phi_):
            w.savetxt(f"phi[{m}]_{md}.txt", phi)
            if self.save_predictions:
                w.savetxt(f"Pmdw[{m}]_{md}.txt", self.predictions_[m])

    def _metrics(self, inputs, bias) -> dict:
        mods = inputs[2]
        n_tok = sum(m.n_tokens for m in mods)
        log_lik = self._log_likelihood(mods)
        return {"log_likelihood": log_lik / max(n_tok, 1.0), "objective": log_lik, "n_tokens": n_tok}

    def _log_likelihood(self, mods) -> float:
        """``sum_tokens log sum_k theta_dk phi_mkw`` with the estimates (no bias), nats."""
        total = 0.0
        for mod, phi in zip(mods, self.phi_):
            if mod.doc.shape[0]:
                p = (self.theta_.index_select(0, mod.doc) * phi.T.index_select(0, mod.word)).sum(1)
                total += float((mod.count * p.log()).sum())
        return total

    # ------------------------------------------------------------ persistence
    def _check_state(self, values: dict) -> dict:
        """``theta`` ``(N, K)`` and ``phi.m`` ``(K, V_m)`` (rows on the simplex: ``_state_rules``);
        the draws (warm start) default to the estimates."""
        if values["theta_"] is None or not values["phi_"]:
            raise ValueError(f"{self.name}: state dict needs 'theta' and 'phi.0', 'phi.1', ...")

        def t(v):
            return torch.as_tensor(v).to(dtype=torch.float64, device=self.device)

        theta, phis = t(values["theta_"]), [t(p) for p in values["phi_"]]
        for name, a in [("theta", theta)] + [(f"phi.{m}", p) for m, p in enumerate(phis)]:
            if a.dim() != 2 or a.shape[0 if name != "theta" else 1] != self.K:
                raise ValueError(f"{self.name}: state dict {name} has shape {tuple(a.shape)}, which does not fit "
                                 f"K={self.K}")
        theta_draw, phi_draw = values["_theta_draw"], values["_phi_draw"]
        return {"theta_": theta, "phi_": phis, "_theta_draw": theta if theta_draw is None else t(theta_draw),
                "_phi_draw": [t(p) for p in phi_draw] if phi_draw and len(phi_draw) == len(phis)
                else [p.clone() for p in phis]}


def _token_list(counts: torch.Tensor):
    """Tokens of an ``(N, V)`` count matrix: ``(doc (T,), word (T,), weight (T,))``; whole tokens
    (weight 1) first, then one partial token per fractional count (weight = the fraction)."""
    mod = _Modality.build(counts)
    doc = torch.cat([mod.tok_doc, mod.doc[mod.part_entry]])
    word = torch.cat([mod.tok_word, mod.word[mod.part_entry]])
    weight = torch.cat([torch.ones(mod.tok_doc.shape[0], dtype=torch.float64, device=counts.device),
                        mod.part_weight])
    return doc, word, weight
