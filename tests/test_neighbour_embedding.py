"""Neighbour-embedding pretraining (serket_pyro.joint.neighbour_embedding): exact k-NN graph, the UMAP
cross-entropy, and its effect through JointModel.pretrain."""

import math

import pyro
import pytest
import torch

import serket_pyro as srk
from serket_pyro.modules.gmm import GMM
from serket_pyro.joint import joint_model
from serket_pyro.joint.neighbour_embedding import knn_graph, neighbour_embedding_loss
from serket_pyro.modules.vae import VAE


def _brute_knn(x, k):
    d = torch.cdist(x.double(), x.double()).pow(2)
    d.fill_diagonal_(float("inf"))
    return d.topk(k, largest=False).indices


@pytest.mark.parametrize("block", [1000, 64, 37])
def test_knn_graph_equals_brute_force(block):
    torch.manual_seed(0)
    x = torch.rand(300, 12)
    assert torch.equal(knn_graph(x, 6, block=block), _brute_knn(x, 6))


def test_knn_graph_of_8bit_data_scales_and_excludes_self():
    torch.manual_seed(1)
    x = (torch.rand(200, 30) * 255).to(torch.uint8)
    g = knn_graph(x, 4, block=50)
    assert g.dtype == torch.int64 and g.shape == (200, 4)
    assert not (g == torch.arange(200)[:, None]).any()
    assert torch.equal(g, _brute_knn(x.float() / 255, 4))


def test_knn_graph_rejects_bad_input():
    with pytest.raises(ValueError, match="more than k"):
        knn_graph(torch.rand(5, 3), 5)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        knn_graph(torch.rand(5), 2)
    x = torch.rand(10, 3)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        knn_graph(x, 2)


def test_neighbour_embedding_loss_equals_the_umap_cross_entropy():
    torch.manual_seed(2)
    z, zn = torch.randn(5, 3), torch.randn(5, 3)
    attract = sum(-math.log(1 / (1 + float((z[i] - zn[i]).pow(2).sum()))) for i in range(5)) / 5
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j]
    repel = 0.0
    for i, j in pairs:
        d2 = float((z[i] - z[j]).pow(2).sum())
        repel += -math.log(d2 / (1 + d2)) if d2 > 0 else 0.0  # eps = 0 below
    repel /= len(pairs)
    got = neighbour_embedding_loss(z, zn, negative_weight=3.0, eps=0.0)
    assert got.item() == pytest.approx(attract + 3.0 * repel, rel=1e-5)
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        neighbour_embedding_loss(z[:1], zn[:1])


def test_pretraining_with_the_neighbour_term_minimises_it(tmp_path):
    """The neighbour term reaches the encoder: after pretraining with it the UMAP cross-entropy of
    the latents (all graph edges, fixed negatives) is far lower than after plain autoencoder
    pretraining from the same start, and the graph is built once and kept."""
    g = torch.Generator().manual_seed(0)
    c = torch.randint(3, (120,), generator=g)
    x = torch.sigmoid(2.0 * torch.randn(3, 10, generator=g)[c] + 0.5 * torch.randn(120, 10, generator=g))

    def fitted(weight):
        srk.reset_module_counter()
        pyro.set_rng_seed(0)
        obs = srk.Observation(x)
        v = VAE(2, hidden=32, batch_size=60, lr=1e-2)
        gm = GMM(3, output_root=str(tmp_path))
        v.connect(obs)
        gm.connect(v)
        jm = joint_model([obs, v, gm])
        jm.pretrain(100, kl_weight=0.0, neighbour_weight=weight, n_neighbours=5)
        return jm

    plain, ne = fitted(0.0), fitted(1.0)
    assert ne.neighbours_ is not None and torch.equal(ne.neighbours_, knn_graph(x, 5))
    assert plain.neighbours_ is None  # no graph is built without the term
    nb = knn_graph(x, 5)

    def graph_loss(jm):
        z = jm.encode()
        return float(sum(neighbour_embedding_loss(z, z[nb[:, j]]) for j in range(5)) / 5)

    assert graph_loss(ne) < 0.8 * graph_loss(plain), (graph_loss(ne), graph_loss(plain))


def test_pretrain_rejects_bad_neighbour_weight(tmp_path):
    obs = srk.Observation(torch.rand(20, 4))
    v = VAE(2, hidden=4, batch_size=10)
    g = GMM(2, output_root=str(tmp_path))
    v.connect(obs)
    g.connect(v)
    jm = joint_model([obs, v, g])
    with pytest.raises(ValueError, match="neighbour_weight"):
        jm.pretrain(1, neighbour_weight=-1.0)
    with pytest.raises(ValueError, match="batch_size >= 2"):
        jm.pretrain(1, batch_size=1, neighbour_weight=1.0)
