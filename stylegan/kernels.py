"""Relaxed-path convolution kernels of the StyleGAN synthesis layers, in minimal-multiplication form.

Channels-last tensors; the inputs go through cheap add / subtract transforms and the products are
batched GEMMs (``stylegan.layers.SynthesisLayer.forward_fast`` chooses them per layer).
"""
from __future__ import annotations

import torch

# Relaxed-path convolution kernels in minimal-multiplication form (channels-last tensors;
# the inputs go through cheap add / subtract transforms, the products are batched GEMMs).
_UP_G = ((1.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 1.0))
_WINO_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def _transform_weight(w: torch.Tensor, g_rows) -> torch.Tensor:
    """[O, I, 3, 3] -> [T*T, I, O]: G w G^T per (o, i) for the T x 3 matrix ``g_rows``."""
    g = torch.tensor(g_rows, dtype=w.dtype, device=w.device)
    u = torch.einsum("pk,oikl,ql->pqio", g, w, g)
    return u.reshape(g.shape[0] ** 2, w.shape[1], w.shape[0]).contiguous()


def _padded_nhwc(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    xp = x.new_zeros(b, h + 2, w + 2, c)
    xp[:, 1:-1, 1:-1] = x.permute(0, 2, 3, 1)
    return xp


def upconv_relaxed(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Nearest x2 upsampling then a 3x3 conv (padding 1), with 9 instead of 36 products per
    input pixel and channel pair. In 1-D, output 2i = w0 (d[i-1] - d[i]) + (w0 + w1 + w2) d[i]
    and output 2i+1 = (w0 + w1 + w2) d[i] + w2 (d[i+1] - d[i]); the 2-D form is the outer
    product. ``u`` = :func:`_transform_weight` (w, _UP_G). Returns channels-last [B, O, 2H, 2W]."""
    b, c, h, wd = x.shape
    o = u.shape[2]
    xp = _padded_nhwc(x)
    mid = xp[:, 1:h + 1]
    rows = (xp[:, 0:h] - mid, mid, xp[:, 2:h + 2] - mid)                  # [B, H, W+2, C] each
    e = x.new_empty(9, b, h, wd, c)
    for p, r in enumerate(rows):
        centre = r[:, :, 1:wd + 1]
        torch.sub(r[:, :, 0:wd], centre, out=e[3 * p])
        e[3 * p + 1].copy_(centre)
        torch.sub(r[:, :, 2:wd + 2], centre, out=e[3 * p + 2])
    m = torch.bmm(e.view(9, -1, c), u).view(3, 3, b, h, wd, o)
    out = x.new_empty(b, h, 2, wd, 2, o)
    for a, r in ((0, m[0] + m[1]), (1, m[1] + m[2])):
        torch.add(r[0], r[1], out=out[:, :, a, :, 0])
        torch.add(r[1], r[2], out=out[:, :, a, :, 1])
    return out.view(b, 2 * h, 2 * wd, o).permute(0, 3, 1, 2)


def conv3x3_winograd(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """3x3 conv (padding 1, even H and W) by Winograd F(2x2, 3x3): 16 instead of 36 products
    per 2x2 output tile. ``u`` = :func:`_transform_weight` (w, _WINO_G). Channels-last out."""
    b, c, h, wd = x.shape
    o = u.shape[2]
    xp = _padded_nhwc(x)
    d = [xp[:, i:h + i:2] for i in range(4)]                                # [B, H/2, W+2, C]
    t = (d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3])
    v = x.new_empty(16, b, h // 2, wd // 2, c)
    for i, ti in enumerate(t):
        e = [ti[:, :, j:wd + j:2] for j in range(4)]
        torch.sub(e[0], e[2], out=v[4 * i])
        torch.add(e[1], e[2], out=v[4 * i + 1])
        torch.sub(e[2], e[1], out=v[4 * i + 2])
        torch.sub(e[1], e[3], out=v[4 * i + 3])
    m = torch.bmm(v.view(16, -1, c), u).view(4, 4, b, h // 2, wd // 2, o)
    out = x.new_empty(b, h // 2, 2, wd // 2, 2, o)
    for a, r in ((0, m[0] + m[1] + m[2]), (1, m[1] - m[2] - m[3])):
        torch.add(r[0] + r[1], r[2], out=out[:, :, a, :, 0])
        torch.sub(r[1] - r[2], r[3], out=out[:, :, a, :, 1])
    return out.view(b, h, wd, o).permute(0, 3, 1, 2)


# Measured per layer on this CPU (AVX-512, 1 thread, batch 1 and 8): bench_generator.py --kernels
WINOGRAD_MIN_CHANNELS = 256     # 3x3 convs: Winograd beats oneDNN's direct conv from 256 channels on
UPCONV_MIN_CHANNELS = 256       # upsampling convs: the 9-product form wins from 256 output channels,
                                # below that a channels-last transposed conv does
