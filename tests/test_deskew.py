"""Tests of serket_pyro.features.deskew: slant removal, centring, range and input checks."""

import numpy as np
import pytest

from serket_pyro.features.deskew import deskew, slant


def _slanted_bar(alpha, H=28, W=28, offset=(0.0, 0.0)):
    """A 2-pixel-wide bar from row 4 to row 23 whose column moves by ``-alpha`` per row."""
    im = np.zeros((H, W), dtype=np.float32)
    for r in range(4, 24):
        c = 13.5 + offset[1] - alpha * (r - 13.5)
        for cc in (int(np.floor(c)), int(np.floor(c)) + 1):
            if 0 <= cc < W and 0 <= r + int(offset[0]) < H:
                im[r + int(offset[0]), cc] = 1.0
    return im


@pytest.mark.parametrize("alpha", [-0.4, -0.2, 0.3])
def test_deskew_makes_a_slanted_bar_upright(alpha):
    bar = _slanted_bar(alpha)[None]
    assert abs(slant(bar)[0] - (-alpha)) < 0.05  # the bar leans as built
    out = deskew(bar)
    assert out.shape == bar.shape and out.dtype == np.float32
    assert abs(slant(out)[0]) < 0.02
    # upright: the columns hold the mass within about one pixel of the centre (a 2-pixel bar)
    def column_spread(im):
        p = im[0].sum(0) / im[0].sum()
        c = np.arange(im.shape[2])
        return np.sqrt((p * (c - (p * c).sum()) ** 2).sum())
    assert column_spread(bar) > 1.2
    assert column_spread(out) < 0.8
    assert np.isclose(out.sum(), bar.sum(), rtol=0.02)  # no mass lost inside the frame


def test_deskew_centres_the_mass_and_keeps_the_range():
    rng = np.random.default_rng(0)
    im = np.zeros((5, 28, 28), dtype=np.float32)
    im[:, 2:12, 3:10] = rng.uniform(0, 1, size=(5, 10, 7))  # off-centre blobs
    out = deskew(im.reshape(5, -1)).reshape(5, 28, 28)
    r = np.arange(28)
    m = out.sum((1, 2))
    assert np.allclose((out.sum(2) * r).sum(1) / m, 13.5, atol=0.3)
    assert np.allclose((out.sum(1) * r).sum(1) / m, 13.5, atol=0.3)
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    # an upright image already at the centre is left (almost) unchanged
    sym = np.zeros((1, 28, 28), dtype=np.float32)
    sym[0, 8:20, 10:18] = 1.0
    sym[0, 12:16, 12:16] = 0.0
    assert np.abs(deskew(sym) - sym).max() < 1e-5


def test_deskew_keeps_blank_images_and_accepts_rectangles_and_255_scale():
    blank = np.zeros((2, 784), dtype=np.uint8)
    assert np.array_equal(deskew(blank), np.zeros((2, 784), dtype=np.float32))
    rect = np.zeros((1, 20 * 30))
    rect[0, 5 * 30 + 10] = 255.0
    out = deskew(rect, image_shape=(20, 30))
    assert out.shape == (1, 600) and np.isclose(out.sum(), 255.0, rtol=1e-4)


@pytest.mark.parametrize("images, shape, match", [
    (np.zeros((2, 783)), None, "not a square"),
    (np.zeros((2, 600)), (20, 20), "does not match"),
    (np.zeros((2, 2, 2, 2)), None, "must be"),
    (np.full((1, 4), np.nan), None, "NaN"),
    (-np.ones((1, 4)), None, "non-negative"),
])
def test_deskew_rejects_bad_input(images, shape, match):
    with pytest.raises(ValueError, match=match):
        deskew(images, image_shape=shape)
