"""Building blocks of the style-based generator and its discriminator.

Every block stores *unscaled* parameters and applies the equalised-learning-rate
scale (gain / sqrt(fan_in), times an optional learning-rate multiplier) at each
forward pass, so that a state_dict saved by the GenForce StyleGAN loads into
these modules unchanged (same parameter names, same shapes, same buffers).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LRELU_SLOPE = 0.2
DEFAULT_GAIN = math.sqrt(2.0)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise each row of ``x`` (shape [B, C]) to unit root-mean-square."""
    return x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def instance_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample, per-channel spatial normalisation without affine parameters."""
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x / torch.sqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + eps)


def blur_kernel(channels: int) -> torch.Tensor:
    """Depthwise [1, 2, 1] x [1, 2, 1] / 16 kernel of shape [C, 1, 3, 3]."""
    k1 = torch.tensor([1.0, 2.0, 1.0])
    k2 = torch.outer(k1, k1)
    k2 = k2 / k2.sum()
    return k2.expand(channels, 1, 3, 3).contiguous()


class Blur(nn.Module):
    """Fixed depthwise 3x3 low-pass filter (buffer ``kernel``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("kernel", blur_kernel(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, stride=1, padding=1, groups=x.shape[1])


class EqualizedDense(nn.Module):
    """Fully connected layer with runtime weight scaling.

    Effective weight = ``weight * gain / sqrt(in_features) * lr_mul``; effective
    bias = ``bias * lr_mul``. Stored weights are initialised N(0, 1) / lr_mul.
    ``fan_in`` may be given explicitly when the stored matrix is wider than the
    layer the scale was designed for (it never is in this project: the scale
    always uses the real fan-in).
    """

    def __init__(self, in_features: int, out_features: int, *, gain: float = DEFAULT_GAIN,
                 lr_mul: float = 1.0, activation: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = gain / math.sqrt(in_features) * lr_mul
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2:
            x = x.reshape(x.shape[0], -1)
        x = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return F.leaky_relu(x, LRELU_SLOPE) if self.activation else x


class NoiseInput(nn.Module):
    """Adds a spatial noise map scaled by a learned per-channel strength.

    The stored map (buffer ``noise``, [1, 1, R, R]) is used unless fresh noise
    is requested; fresh noise is one N(0, 1) map per sample.
    """

    def __init__(self, resolution: int, channels: int):
        super().__init__()
        self.resolution = resolution
        self.weight = nn.Parameter(torch.zeros(channels))
        self.register_buffer("noise", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, randomize: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        if randomize:
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution,
                                generator=generator, device=x.device, dtype=x.dtype)
        else:
            noise = self.noise
        return x + noise * self.weight.view(1, -1, 1, 1)


class StyleAffine(nn.Module):
    """w -> (scale, shift) style vector of size 2C; applied as x * (1 + s) + t."""

    def __init__(self, w_dim: int, channels: int):
        super().__init__()
        self.channels = channels
        self.weight = nn.Parameter(torch.randn(2 * channels, w_dim))
        self.bias = nn.Parameter(torch.zeros(2 * channels))
        self.scale = 1.0 / math.sqrt(w_dim)

    def style(self, w: torch.Tensor) -> torch.Tensor:
        return F.linear(w, self.weight * self.scale, self.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        style = self.style(w)
        s = style.view(-1, 2, self.channels, 1, 1)
        return x * (s[:, 0] + 1.0) + s[:, 1], style


class SynthesisLayer(nn.Module):
    """One style-modulated layer of the synthesis network.

    ``kind`` is one of
      * ``"const"``  - the learned 4x4 input (parameter ``const``), no convolution;
      * ``"conv"``   - 3x3 convolution, stride 1;
      * ``"up"``     - nearest x2 upsampling, 3x3 convolution, blur;
      * ``"up_fused"`` - the same computed as a stride-2 transposed convolution, blur.
    Then: + noise, + bias, LeakyReLU(0.2), instance norm, style modulation.
    """

    def __init__(self, kind: str, in_channels: int, out_channels: int, resolution: int, w_dim: int):
        super().__init__()
        if kind not in ("const", "conv", "up", "up_fused"):
            raise ValueError(f"unknown synthesis layer kind {kind!r}")
        self.kind = kind
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if kind == "const":
            self.const = nn.Parameter(torch.ones(1, in_channels, resolution, resolution))
        else:
            self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
            self.scale = DEFAULT_GAIN / math.sqrt(in_channels * 9)
        self.apply_noise = NoiseInput(resolution, out_channels)
        self.style = StyleAffine(w_dim, out_channels)
        if kind in ("up", "up_fused"):
            self.blur = Blur(out_channels)

    def _fused_up_weight(self) -> torch.Tensor:
        w = self.weight * self.scale
        w = F.pad(w, (1, 1, 1, 1))
        w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]
        return w.transpose(0, 1)

    def forward(self, x: torch.Tensor | None, w: torch.Tensor, randomize_noise: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "const":
            x = self.const.expand(w.shape[0], -1, -1, -1)
        elif self.kind == "conv":
            x = F.conv2d(x, self.weight * self.scale, padding=1)
        elif self.kind == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.blur(F.conv2d(x, self.weight * self.scale, padding=1))
        else:
            x = self.blur(F.conv_transpose2d(x, self._fused_up_weight(), stride=2, padding=1))
        x = self.apply_noise(x, randomize_noise, generator)
        x = F.leaky_relu(x + self.bias.view(1, -1, 1, 1), LRELU_SLOPE)
        return self.style(instance_norm(x), w)


class ToRGB(nn.Module):
    """1x1 convolution to image channels with a bias, no activation."""

    def __init__(self, in_channels: int, out_channels: int = 3):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(out_channels))      # registered first: GenForce key order
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.scale = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale) + self.bias.view(1, -1, 1, 1)


def minibatch_stddev(x: torch.Tensor, group_size: int, new_channels: int = 1,
                     eps: float = 1e-8) -> torch.Tensor:
    """Append the minibatch standard-deviation feature(s) as extra channel(s).

    Groups are strided: with ``G = min(group_size, B)`` sample ``i`` belongs to
    group ``i mod (B / G)``; B must be divisible by G.
    """
    if group_size <= 1:
        return x
    b, c, h, w = x.shape
    g = min(group_size, b)
    if b % g:
        raise ValueError(f"minibatch-std: batch size {b} is not divisible by group size {g}")
    y = x.reshape(g, -1, new_channels, c // new_channels, h, w)
    y = (y - y.mean(dim=0, keepdim=True)).pow(2).mean(dim=0)
    y = torch.sqrt(y + eps).mean(dim=(2, 3, 4))            # [M, n]
    y = y.reshape(-1, new_channels, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class DiscriminatorConv(nn.Module):
    """Discriminator convolution: [mbstd] -> [blur] -> conv (+bias) -> [avg-pool] -> LReLU.

    ``down`` is ``None``, ``"pool"`` (blur, conv, 2x2 average pool) or ``"fused"``
    (blur, stride-2 conv whose kernel averages the four 1-pixel shifts).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 down: str | None = None, mbstd_group: int = 0, mbstd_channels: int = 1):
        super().__init__()
        if mbstd_group > 1:
            in_channels += mbstd_channels
        self.mbstd_group = mbstd_group
        self.mbstd_channels = mbstd_channels
        self.down = down
        self.kernel_size = kernel_size
        if down is not None:
            self.blur = Blur(in_channels)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = DEFAULT_GAIN / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = minibatch_stddev(x, self.mbstd_group, self.mbstd_channels)
        weight = self.weight * self.scale
        if self.down is not None:
            x = self.blur(x)
        if self.down == "fused":
            weight = F.pad(weight, (1, 1, 1, 1))
            weight = (weight[:, :, 1:, 1:] + weight[:, :, :-1, 1:]
                      + weight[:, :, 1:, :-1] + weight[:, :, :-1, :-1]) * 0.25
            x = F.conv2d(x, weight, self.bias, stride=2, padding=1)
        else:
            x = F.conv2d(x, weight, self.bias, padding=self.kernel_size // 2)
            if self.down == "pool":
                x = F.avg_pool2d(x, 2)
        return F.leaky_relu(x, LRELU_SLOPE)
