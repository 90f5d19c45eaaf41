"""Relaxed-path convolution kernels of the StyleGAN synthesis layers, in minimal-multiplication form.

Channels-last tensors; the inputs go through cheap add / subtract transforms and the products are
batched GEMMs (``stylegan.layers.SynthesisLayer.forward_fast`` chooses them per layer).
"""
from __future__ import annotations

import torch

# Relaxed-path convolution kernels in minimal-multiplication form (channels-last tensors;
# the inputs go through cheap add / subtract transforms, the products are batched GEMMs).
_UP_G = ((1.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 1.0))


def _transform_weight(w: torch.Tensor, g_rows) -> torch.Tensor:
    """[O, I, 3, 3] -> [T*T, I, O]: G w G^T per (o, i) for the T x 3 matrix ``g_rows`` (in float64)."""
    g = torch.tensor(g_rows, dtype=torch.float64, device=w.device)
    u = torch.einsum("pk,oikl,ql->pqio", g, w.double(), g)
    return u.reshape(g.shape[0] ** 2, w.shape[1], w.shape[0]).to(w.dtype).contiguous()


def _padded_nhwc(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H+2, W+2, C] with a zero border (only the border is written twice)."""
    b, c, h, w = x.shape
    xp = x.new_empty(b, h + 2, w + 2, c)
    xp[:, 0].zero_()
    xp[:, -1].zero_()
    xp[:, 1:-1, 0].zero_()
    xp[:, 1:-1, -1].zero_()
    xp[:, 1:-1, 1:-1] = x.permute(0, 2, 3, 1)
    return xp


def upconv_relaxed(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Nearest x2 upsampling then a 3x3 conv (padding 1), with 9 instead of 36 products per
    input pixel and channel pair. In 1-D, output 2i = w0 (d[i-1] - d[i]) + (w0 + w1 + w2) d[i]
    and output 2i+1 = (w0 + w1 + w2) d[i] + w2 (d[i+1] - d[i]); the 2-D form is the outer
    product. ``u`` = :func:`_transform_weight` (w, _UP_G). The 9 difference maps are built in
    blocks (samples or strips of input rows, :func:`_blocks`) so the temporaries stay cache-sized.
    Returns channels-last [B, O, 2H, 2W]."""
    b, c, h, wd = x.shape
    o = u.shape[2]
    xp = _padded_nhwc(x)
    out = x.new_empty(b, h, 2, wd, 2, o)
    for i, nb, r0, k in _blocks(b, h, 9 * wd * max(c, o), u.numel()):
        xs = xp[i:i + nb, r0:r0 + k + 2]
        mid = xs[:, 1:k + 1]
        rows = (xs[:, 0:k] - mid, mid, xs[:, 2:k + 2] - mid)             # [nb, k, W+2, C] each
        e = x.new_empty(9, nb, k, wd, c)
        for p, r in enumerate(rows):
            centre = r[:, :, 1:wd + 1]
            torch.sub(r[:, :, 0:wd], centre, out=e[3 * p])
            e[3 * p + 1].copy_(centre)
            torch.sub(r[:, :, 2:wd + 2], centre, out=e[3 * p + 2])
        m = torch.bmm(e.view(9, -1, c), u).view(3, 3, nb, k, wd, o)
        dst = out[i:i + nb, r0:r0 + k]
        for a, r in ((0, m[0] + m[1]), (1, m[1] + m[2])):
            torch.add(r[0], r[1], out=dst[:, :, a, :, 0])
            torch.add(r[1], r[2], out=dst[:, :, a, :, 1])
    return out.view(b, 2 * h, 2 * wd, o).permute(0, 3, 1, 2)


def _blocks(b: int, rows: int, per_row: int, weight_values: int) -> list[tuple[int, int, int, int]]:
    """(first sample, samples, first row, rows) blocks whose temporaries hold about the budget:
    whole samples, several per block, when one fits; otherwise strips of rows of one sample."""
    budget = min(max(STRIP_VALUES, weight_values), STRIP_MAX)
    if per_row * rows <= budget:
        step = budget // (per_row * rows)
        return [(i, min(step, b - i), 0, rows) for i in range(0, b, step)]
    k = max(1, budget // per_row)
    return [(i, 1, r, min(k, rows - r)) for i in range(b) for r in range(0, rows, k)]


# Winograd F(4x4, 3x3) (interpolation points 0, +-1, +-2, infinity): 36 instead of 144 products per
# 4x4 output tile. Input transform B^T d B, weight transform G w G^T, output transform A^T m A.
_WINO_BT = ((4.0, 0.0, -5.0, 0.0, 1.0, 0.0), (0.0, -4.0, -4.0, 1.0, 1.0, 0.0), (0.0, 4.0, -4.0, -1.0, 1.0, 0.0),
            (0.0, -2.0, -1.0, 2.0, 1.0, 0.0), (0.0, 2.0, -1.0, -2.0, 1.0, 0.0), (0.0, 4.0, 0.0, -5.0, 0.0, 1.0))
_WINO_G = ((1 / 4, 0.0, 0.0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
           (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0.0, 0.0, 1.0))
_WINO_AT = ((1.0, 1.0, 1.0, 1.0, 1.0, 0.0), (0.0, 1.0, -1.0, 2.0, -2.0, 0.0), (0.0, 1.0, 1.0, 4.0, 4.0, 0.0),
            (0.0, 1.0, -1.0, 8.0, -8.0, 1.0))
# Values per temporary of the tiled kernel: strips of tile rows (or groups of samples) keep the
# [36, tiles, C] blocks small: cache-resident, and below glibc's largest mmap threshold (32 MiB),
# so no fresh pages per call. A block is at least as large as the transformed weight (read once
# per block). Measured with benchmarks/bench_generator.py --kernels.
STRIP_VALUES = 1 << 19
STRIP_MAX = 7 << 20


def conv3x3_winograd(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """3x3 conv (padding 1, H and W divisible by 4) by Winograd F(4x4, 3x3). ``u`` =
    :func:`_transform_weight` (w, _WINO_G) (computed in float64). The 6x6 input tiles are gathered
    in strips of tile rows; the input and output transforms are small matrix products over the tile
    axes, the 36 tile positions one batched GEMM. Channels-last out; within ~1e-5 of the direct
    convolution relative to its range (the direct one: ~2e-6)."""
    b, c, h, wd = x.shape
    o = u.shape[2]
    th, tw = h // 4, wd // 4
    bt = torch.tensor(_WINO_BT, dtype=x.dtype, device=x.device)
    at = torch.tensor(_WINO_AT, dtype=x.dtype, device=x.device)
    xp = _padded_nhwc(x)
    sb, sh, sw, sc = xp.stride()
    out = x.new_empty(b, th, 4, tw, 4, o)
    for i, nb, r0, k in _blocks(b, th, 36 * tw * max(c, o), u.numel()):   # k rows of 4x4 tiles
        d = xp.as_strided((6, 6, nb, k, tw, c), (sh, sw, sb, 4 * sh, 4 * sw, sc),
                          xp.storage_offset() + i * sb + 4 * r0 * sh).reshape(6, -1)    # gathered tiles
        n = nb * k * tw
        v = torch.matmul(bt, torch.mm(bt, d).view(6, 6, -1))                          # [6, 6, n*c]
        m = torch.bmm(v.view(36, n, c), u)                                            # [36, n, o]
        y = torch.matmul(at, torch.mm(at, m.view(6, -1)).view(4, 6, -1))             # [4, 4, n*o]
        out[i:i + nb, r0:r0 + k].copy_(y.view(4, 4, nb, k, tw, o).permute(2, 3, 0, 4, 1, 5))
    return out.view(b, h, wd, o).permute(0, 3, 1, 2)


# Measured per layer on this CPU (AVX-512, 1 thread, batch 1 and 8): bench_generator.py --kernels
WINOGRAD_MIN_CHANNELS = 64      # 3x3 convs: Winograd F(4x4, 3x3) beats oneDNN's direct conv from 64 channels
WINOGRAD_MIN_TILES = 16         # and from 16 tiles of 4x4 per call (batch x H/4 x W/4): below, reading the
                                # 36 transformed weight matrices costs more than it saves
UPCONV_MIN_CHANNELS = 128       # upsampling convs: the 9-product form (built in row strips) wins from 128
                                # output channels (256 px, batch 1: 34.2 vs 39.1 ms; batch 8: 315 vs 334;
                                # synthface batch 8: 5.5 vs 5.7); at 64 and below a channels-last
                                # transposed conv does (256 px batch 8: 384 vs 401 ms)
