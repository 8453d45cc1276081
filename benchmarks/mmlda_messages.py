"""Why a top MLDA's message pulled the lower MLDAs of the mMLDA example away, and the rules compared.

Two parts, on ``serket_objects.npz`` with the graph of ``examples/original/mmlda.py`` (the original's
``mMLDA.py``: object MLDA on dsift, mfcc, tactile; motion MLDA on joint angles; a top MLDA over both):

* ``--diagnose``: after the first iteration, for each lower MLDA, how the top MLDA's message
  compares with the child's own classification: how often its argmax is the child's class, its
  accuracy, its mean largest probability, and, over the documents where the two disagree, the
  median log-ratio ``log(max_k q_dk / q_d,child)`` times the child's tokens per document (the
  weight the message gets once per token) against the median margin of the child's own words
  ``log p(w_d | child's class) - log p(w_d | message's argmax)`` (all tokens in one topic, the
  learned ``phi_``); then the accuracies after the second iteration.  Run with the rule before
  ``parent_weight`` (``token``), where the pull shows.
* default: object and motion accuracy after 5 iterations per seed for each rule of the lower
  MLDAs: ``token`` (the message on every token), ``document`` / ``auto`` (once per document),
  ``scaled`` (power ``w / L_d``: the top MLDA's token weight ``w`` = 100 for each lower MLDA spread
  over the child's ``L_d`` tokens) and ``none`` (the lower MLDAs ignore the message).

Usage::

    python benchmarks/mmlda_messages.py --diagnose --seeds 0 1 2
    python benchmarks/mmlda_messages.py --rules token auto scaled none --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

import serket_pyro as srk
from serket_pyro import datasets, metrics, mlda


class _Ablation(mlda.MLDA):
    """A lower MLDA that rescales (``scaled``) or ignores (``none``) its parent's message."""

    def __init__(self, *args, ablation="none", top_weight=100, **kwargs):
        super().__init__(*args, parent_weight="token", **kwargs)
        self._ablation, self._top_weight = ablation, top_weight

    def _read_backward(self, inputs):
        b = super()._read_backward(inputs)
        if b is None or self._ablation == "none":
            return None
        L = sum(m.doc_total for m in inputs[2]).clamp_min(1.0).unsqueeze(1)
        lb = b.log() * (self._top_weight / L)
        return (lb - lb.logsumexp(1, keepdim=True)).exp()


def build(data, seed, rule, itr, root):
    srk.reset_module_counter()
    srk.set_seed(seed)
    common = dict(itr=itr, save_predictions=False, output_root=root)
    if rule in ("scaled", "none"):
        lower = lambda *a, **k: _Ablation(*a, ablation=rule, **k, **common)  # noqa: E731
    else:
        lower = lambda *a, **k: mlda.MLDA(*a, parent_weight=rule, **k, **common)  # noqa: E731
    obs = [srk.Observation(getattr(data, m)) for m in ("dsift", "mfcc", "tactile", "angle")]
    m1 = lower(10, [200, 200, 200], category=data.object_category)
    m2 = lower(10, [200], category=data.motion_category)
    m3 = mlda.MLDA(10, [100, 100], **common)
    m1.connect(*obs[:3])
    m2.connect(obs[3])
    m3.connect(m1, m2)
    return m1, m2, m3


def diagnose(data, args, root):
    print("| seed | MLDA | acc. after it. 1 | message's argmax = child's class | message's accuracy | mean max "
          "message prob. | docs where they disagree | median log-ratio x tokens (nats) | median own-evidence "
          "margin (nats) | acc. after it. 2 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        m1, m2, m3 = build(data, seed, args.diagnose_rule, args.itr, root)
        for m in (m1, m2, m3):
            m.update()
        rows = []
        for name, m, truth in (("object", m1, data.object_category), ("motion", m2, data.motion_category)):
            q = m.get_class_backward_msg(len(truth), m.K).probs.double()
            cur = m.theta_.argmax(1)
            idx = torch.arange(len(truth))
            counts, _ = m.token_counts()
            L = float(sum(c.sum(1) for c in counts).mean())
            own = sum(c @ p.log().T for c, p in zip(counts, m.phi_))  # (N, K): all tokens in topic k
            dis = q.argmax(1) != cur
            ratio = (q.max(1).values / q[idx, cur]).log()[dis]
            margin = (own[idx, cur] - own[idx, q.argmax(1)])[dis]
            rows.append([seed, name, m.metrics_["accuracy"], float((~dis).double().mean()),
                         metrics.accuracy(truth, q.argmax(1).numpy()), float(q.max(1).values.mean()), int(dis.sum()),
                         f"{float(ratio.median()):.2f} x {L:.0f} = {float(ratio.median()) * L:.0f}",
                         f"{float(margin.median()):.0f}"])
        m1.update()
        m2.update()
        rows[0].append(m1.metrics_["accuracy"])
        rows[1].append(m2.metrics_["accuracy"])
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]} | {r[7]} | {r[8]} "
                  f"| {r[9]:.2f} |", flush=True)


def compare(data, args, root):
    for rule in args.rules:
        acc = []
        for seed in args.seeds:
            m1, m2, m3 = build(data, seed, rule, args.itr, root)
            for _ in range(args.updates):
                for m in (m1, m2, m3):
                    m.update()
            acc.append((m1.metrics_["accuracy"], m2.metrics_["accuracy"]))
            print(f"{rule} seed {seed}: object {acc[-1][0]:.2f}, motion {acc[-1][1]:.2f}", flush=True)
        a = np.array(acc)
        print(f"{rule}: object mean {a[:, 0].mean():.3f} ({a[:, 0].min():.2f}..{a[:, 0].max():.2f}), motion mean "
              f"{a[:, 1].mean():.3f} ({a[:, 1].min():.2f}..{a[:, 1].max():.2f}) over seeds {args.seeds}")


def main(args):
    torch.set_num_threads(args.threads)
    data = datasets.load_objects(root=args.data_dir)
    with tempfile.TemporaryDirectory() as root:
        if args.diagnose:
            diagnose(data, args, root)
        else:
            compare(data, args, root)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--diagnose", action="store_true", help="the first iteration's messages against the children")
    p.add_argument("--diagnose-rule", default="token", choices=("token", "document", "auto"))
    p.add_argument("--rules", nargs="+", default=["token", "auto", "scaled", "none"],
                   choices=("token", "document", "auto", "scaled", "none"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--itr", type=int, default=100)
    p.add_argument("--updates", type=int, default=5)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    main(p.parse_args())
