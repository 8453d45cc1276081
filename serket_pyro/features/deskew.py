"""Moment-based deskewing of digit images.

Handwritten digits differ most, beyond their identity, in slant.  Deskewing shears each image so
that its principal axis is vertical and moves its centre of mass to the centre of the frame: the
classic MNIST preprocessing (LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied
to document recognition", Proc. IEEE 86(11), 1998, where it lowers the k-nearest-neighbour error
from 3.1 % to 2.4 %; the moment formulation follows Casey, "Moment normalization of handprinted
characters", IBM J. Res. Dev. 14(5), 1970).

For an image ``I(r, c)`` (row ``r``, column ``c``) with centre of mass ``(r0, c0)``, the slant is
``alpha = cov(r, c) / var(r)`` under ``I`` as weights, and the deskewed image is
``J(r, c) = I(r - rc + r0, c - cc + c0 + alpha * (r - rc))`` where ``(rc, cc)`` is the centre of
the frame, sampled with bilinear interpolation (zeros outside the frame).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["deskew", "slant"]


def _as_images(images, shape):
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    if not torch.is_floating_point(x):
        x = x.to(torch.float32)
    if x.ndim == 2:
        h, w = shape if shape is not None else _square(x.shape[1])
        if h * w != x.shape[1]:
            raise ValueError(f"deskew: image_shape {shape} does not match {x.shape[1]} pixels per image")
        return x.reshape(-1, h, w), True
    if x.ndim == 3:
        return x, False
    raise ValueError(f"deskew: images must be (N, H*W) or (N, H, W), got shape {tuple(x.shape)}")


def _square(d: int) -> tuple[int, int]:
    s = int(round(d ** 0.5))
    if s * s != d:
        raise ValueError(f"deskew: {d} pixels per image is not a square image; pass image_shape=(H, W)")
    return s, s


def _moments(im: torch.Tensor):
    """Centre of mass ``(r0, c0)`` and slant ``alpha`` of each image ``(N, H, W)`` -> three ``(N,)``."""
    N, H, W = im.shape
    r = torch.arange(H, dtype=im.dtype, device=im.device)
    c = torch.arange(W, dtype=im.dtype, device=im.device)
    mass = im.sum((1, 2))
    safe = mass.clamp_min(torch.finfo(im.dtype).tiny)
    r0 = (im.sum(2) * r).sum(1) / safe
    c0 = (im.sum(1) * c).sum(1) / safe
    dr = r[None, :, None] - r0[:, None, None]
    dc = c[None, None, :] - c0[:, None, None]
    var_r = (im * dr ** 2).sum((1, 2)) / safe
    cov = (im * dr * dc).sum((1, 2)) / safe
    alpha = torch.where(var_r > 0, cov / var_r.clamp_min(torch.finfo(im.dtype).tiny), torch.zeros_like(cov))
    blank = mass <= 0
    centre_r, centre_c = (H - 1) / 2, (W - 1) / 2
    r0 = torch.where(blank, torch.full_like(r0, centre_r), r0)
    c0 = torch.where(blank, torch.full_like(c0, centre_c), c0)
    return r0, c0, alpha


def slant(images, image_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Slant ``alpha = cov(row, column) / var(row)`` of each image, ``(N,)`` (columns per row;
    positive: the top leans left, as row indices grow downwards)."""
    im, _ = _as_images(images, image_shape)
    return _moments(im.to(torch.float64))[2].cpu().numpy()


def deskew(images, image_shape: tuple[int, int] | None = None, *, batch_size: int = 4096) -> np.ndarray:
    """Deskew and centre every image (see the module docstring).

    Args:
        images: ``(N, H*W)`` flattened images (square unless ``image_shape`` is given) or
            ``(N, H, W)``, non-negative intensities (any scale; e.g. [0, 1] or 0..255).
        image_shape: ``(H, W)`` of flattened images (default: square).
        batch_size: images processed at once (bounds the memory).

    Returns:
        ``float32`` array of the input's shape with intensities in the input's range (bilinear
        interpolation does not overshoot).  A blank image stays blank.
    """
    im, flat = _as_images(images, image_shape)
    if torch.isnan(im).any():
        raise ValueError("deskew: images contain NaN")
    if (im < 0).any():
        raise ValueError("deskew: intensities must be non-negative")
    N, H, W = im.shape
    out = torch.empty(N, H, W, dtype=torch.float32)
    rr, cc = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    centre_r, centre_c = (H - 1) / 2, (W - 1) / 2
    for s in range(0, N, batch_size):
        b = im[s:s + batch_size].to(torch.float64)
        r0, c0, alpha = _moments(b)
        src_r = rr[None] - centre_r + r0[:, None, None]
        src_c = cc[None] - centre_c + c0[:, None, None] + alpha[:, None, None] * (rr[None] - centre_r)
        # grid_sample's normalised coordinates (align_corners=False): pixel i -> (2 i + 1) / size - 1
        grid = torch.stack([(2 * src_c + 1) / W - 1, (2 * src_r + 1) / H - 1], dim=-1)
        out[s:s + batch_size] = F.grid_sample(b.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros",
                                              align_corners=False).squeeze(1).to(torch.float32)
    return (out.reshape(N, H * W) if flat else out).numpy()
