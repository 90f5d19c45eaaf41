"""Building blocks of the style-based generator and its discriminator.

Every block stores *unscaled* parameters and applies the equalised-learning-rate
scale (gain / sqrt(fan_in), times an optional learning-rate multiplier) at each
forward pass, so that a state_dict saved by the GenForce StyleGAN loads into
these modules unchanged (same parameter names, same shapes, same buffers).

The synthesis layers also have inference paths (:meth:`SynthesisLayer.forward_fast`):

* ``"exact"``: the plain computation, operation for operation, with the scaled
  weights (and the stored noise map times its strength) computed once and cached
  while the module is in eval mode, and the element-wise steps done in place.
  Its output is bit-identical to the plain ``forward``.
* ``"relaxed"``: channels-last tensors; the nearest-upsample + 3x3 conv (and the
  transposed-conv upsampling, which is nearest upsampling + the flipped kernel) in a
  9-product form on the low-resolution input (:func:`upconv_relaxed`, 4x fewer
  multiply-adds) for wide layers, as one channels-last transposed conv for narrow ones; 3x3 convs
  with many channels by Winograd F(4x4, 3x3) (:func:`conv3x3_winograd`, 4x fewer), noise and bias
  added as one cached map,
  instance norm and style modulation as one per-channel affine (a batch-norm call for
  a single sample). The same function up to float rounding (images within ~2e-5 of
  the plain path, relative to their range).

The cache (:class:`WeightCache`) is keyed on the source tensors' storage and
version counters, so an in-place update (``load_state_dict``, an optimiser step)
invalidates it, and it is dropped whenever the module is put in train mode.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kernels import (_UP_G, _WINO_G, UPCONV_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_TILES, _transform_weight,
                      conv3x3_winograd, upconv_relaxed)

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


class WeightCache:
    """Derived tensors (scaled weights and the like) computed once per weight version.

    ``get(name, sources, fn)`` returns ``fn()`` computed under ``no_grad`` and cached
    until one of ``sources`` changes (another storage or a bumped version counter), the
    device / dtype changes, or inference mode is entered or left. Tensors created in
    inference mode have no version counter: for them nothing is cached.
    """

    def __init__(self):
        self._store: dict[str, tuple[tuple, torch.Tensor]] = {}

    def clear(self) -> None:
        self._store.clear()

    @classmethod
    def exclude_from_compile(cls) -> None:
        """Before torch.compile traces a model: ``get`` then runs eagerly, not traced (no guards on the
        dict). Applied here, on first use, not as a decorator: ``torch.compiler.disable`` imports torch's
        compiler, about 1.3 s in every process that imports this module."""
        if not getattr(cls.get, "_eager_under_compile", False):
            cls.get = torch.compiler.disable(cls.get)
            cls.get._eager_under_compile = True

    def get(self, name: str, sources: tuple[torch.Tensor, ...], fn) -> torch.Tensor:
        try:
            key = tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in sources)
        except RuntimeError:                      # inference tensors: no version counter
            with torch.no_grad():
                return fn()
        key = key + (torch.is_inference_mode_enabled(),)
        hit = self._store.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        with torch.no_grad():
            value = fn()
        self._store[name] = (key, value)
        return value


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
                generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is not None:                      # explicit per-sample maps [B, 1, R, R]
            pass
        elif randomize:
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
        self._cache = WeightCache()

    def train(self, mode: bool = True):
        self._cache.clear()
        return super().train(mode)

    def _fused_up_weight(self, w: torch.Tensor | None = None) -> torch.Tensor:
        """Transposed-conv (stride 2) kernel of nearest upsampling + conv with ``w`` flipped."""
        w = self.weight * self.scale if w is None else w
        w = F.pad(w, (1, 1, 1, 1))
        w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]
        return w.transpose(0, 1)

    def forward(self, x: torch.Tensor | None, w: torch.Tensor, randomize_noise: bool = False,
                generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "const":
            x = self.const.expand(w.shape[0], -1, -1, -1)
        elif self.kind == "conv":
            x = F.conv2d(x, self.weight * self.scale, padding=1)
        elif self.kind == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.blur(F.conv2d(x, self.weight * self.scale, padding=1))
        else:
            x = self.blur(F.conv_transpose2d(x, self._fused_up_weight(), stride=2, padding=1))
        x = self.apply_noise(x, randomize_noise, generator, noise)
        x = F.leaky_relu(x + self.bias.view(1, -1, 1, 1), LRELU_SLOPE)
        return self.style(instance_norm(x), w)

    # ------------------------------------------------------------ inference paths

    def _cached(self, name: str, path: str) -> torch.Tensor:
        noise = self.apply_noise
        cl = torch.channels_last
        if name == "weight":
            return self._cache.get(f"weight/{path}", (self.weight,), lambda: (
                self.weight * self.scale if path == "exact"
                else (self.weight * self.scale).contiguous(memory_format=cl)))
        if name == "fused_up":
            return self._cache.get("fused_up", (self.weight,), self._fused_up_weight)
        if name == "up3":
            return self._cache.get("up3", (self.weight,), lambda: _transform_weight(
                (self.weight * self.scale).flip(2, 3) if self.kind == "up_fused" else self.weight * self.scale,
                _UP_G))
        if name == "convT":                         # relaxed: both up kinds as one transposed conv
            return self._cache.get("convT", (self.weight,), lambda: self._fused_up_weight(
                None if self.kind == "up_fused" else (self.weight * self.scale).flip(2, 3)
            ).contiguous(memory_format=cl))
        if name == "wino":
            return self._cache.get("wino", (self.weight,),
                                   lambda: _transform_weight(self.weight * self.scale, _WINO_G))
        if name == "noise":                         # exact: noise * strength, as the plain path
            return self._cache.get("noise", (noise.noise, noise.weight),
                                   lambda: noise.noise * noise.weight.view(1, -1, 1, 1))
        if name == "noise_bias":                    # relaxed: noise * strength + bias in one map
            return self._cache.get("noise_bias", (noise.noise, noise.weight, self.bias), lambda: (
                noise.noise * noise.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
            ).contiguous(memory_format=cl))
        if name == "blur":
            return self._cache.get("blur", (self.blur.kernel,),
                                   lambda: self.blur.kernel.contiguous(memory_format=cl))
        if name == "const_norm":                    # the const layer up to its style: one map for every sample
            return self._cache.get("const_norm", (self.const, noise.noise, noise.weight, self.bias), lambda: instance_norm(
                F.leaky_relu(self.const + noise.noise * noise.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1),
                             LRELU_SLOPE)))
        if name == "style":
            st = self.style
            return self._cache.get("style", (st.weight,), lambda: st.weight * st.scale)
        raise KeyError(name)

    def forward_fast(self, x: torch.Tensor | None, w: torch.Tensor, path: str, randomize_noise: bool = False,
                     generator: torch.Generator | None = None,
                     noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer on an inference path (``"exact"`` or ``"relaxed"``, see the module doc).

        In train mode it is the plain :meth:`forward` (nothing cached)."""
        if self.training:
            return self.forward(x, w, randomize_noise, generator, noise)
        if self.kind == "const" and noise is None and not randomize_noise:
            # stored noise: everything before the style is the same for every sample, so it is
            # computed once (as the plain path does) and cached; then x * (1 + s) + t per sample
            style = F.linear(w, self._cached("style", path), self.style.bias)
            s = style.view(-1, 2, self.style.channels, 1, 1)
            x = self._cached("const_norm", path) * (s[:, 0] + 1.0) + s[:, 1]
            return (x if path == "exact" else x.contiguous(memory_format=torch.channels_last)), style
        if path == "exact":
            return self._forward_exact(x, w, randomize_noise, generator, noise)
        if path == "relaxed":
            return self._forward_relaxed(x, w, randomize_noise, generator, noise)
        raise ValueError(f"unknown inference path {path!r}")

    def _fresh_noise(self, x, randomize_noise, generator, noise):
        if noise is None and randomize_noise:
            r = self.apply_noise.resolution
            noise = torch.randn(x.shape[0], 1, r, r, generator=generator, device=x.device, dtype=x.dtype)
        return noise

    def _forward_exact(self, x, w, randomize_noise, generator, noise):
        if self.kind == "const":
            x = self.const.expand(w.shape[0], -1, -1, -1)
        elif self.kind == "conv":
            x = F.conv2d(x, self._cached("weight", "exact"), padding=1)
        elif self.kind == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = F.conv2d(x, self._cached("weight", "exact"), padding=1)
            x = F.conv2d(x, self.blur.kernel, stride=1, padding=1, groups=x.shape[1])
        else:
            x = F.conv_transpose2d(x, self._cached("fused_up", "exact"), stride=2, padding=1)
            x = F.conv2d(x, self.blur.kernel, stride=1, padding=1, groups=x.shape[1])
        noise = self._fresh_noise(x, randomize_noise, generator, noise)
        nw = self._cached("noise", "exact") if noise is None else noise * self.apply_noise.weight.view(1, -1, 1, 1)
        x = x + nw if self.kind == "const" else x.add_(nw)       # never write into the const parameter
        x.add_(self.bias.view(1, -1, 1, 1))
        F.leaky_relu_(x, LRELU_SLOPE)
        x.sub_(x.mean(dim=(2, 3), keepdim=True))
        x.div_(torch.sqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + 1e-8))
        style = F.linear(w, self._cached("style", "exact"), self.style.bias)
        s = style.view(-1, 2, self.style.channels, 1, 1)
        x.mul_(s[:, 0] + 1.0).add_(s[:, 1])
        return x, style

    def _forward_relaxed(self, x, w, randomize_noise, generator, noise):
        cl = torch.channels_last
        c = self.bias.shape[0]
        if self.kind == "const":
            x = self.const.expand(w.shape[0], -1, -1, -1).clone(memory_format=cl)   # a copy: updated in place
        else:
            x = x.contiguous(memory_format=cl)
            if self.kind == "conv":
                b_, c_, h_, w_ = x.shape
                if (c_ >= WINOGRAD_MIN_CHANNELS and h_ % 4 == 0 and w_ % 4 == 0
                        and b_ * (h_ // 4) * (w_ // 4) >= WINOGRAD_MIN_TILES):
                    x = conv3x3_winograd(x, self._cached("wino", "relaxed"))
                else:
                    x = F.conv2d(x, self._cached("weight", "relaxed"), padding=1)
            else:
                if c >= UPCONV_MIN_CHANNELS:
                    x = upconv_relaxed(x, self._cached("up3", "relaxed"))
                else:
                    x = F.conv_transpose2d(x, self._cached("convT", "relaxed"), stride=2, padding=1)
                x = F.conv2d(x, self._cached("blur", "relaxed"), padding=1, groups=c)
        noise = self._fresh_noise(x, randomize_noise, generator, noise)
        if noise is None:
            x.add_(self._cached("noise_bias", "relaxed"))
        else:
            x.add_(noise * self.apply_noise.weight.view(1, -1, 1, 1)).add_(self.bias.view(1, -1, 1, 1))
        F.leaky_relu_(x, LRELU_SLOPE)
        style = F.linear(w, self._cached("style", "relaxed"), self.style.bias)
        s = style.view(-1, 2, c)
        if x.shape[0] == 1:
            # one sample: instance norm = batch norm over (N, H, W), and its affine step is the
            # style modulation; ATen's CPU batch norm has channels-last kernels (2 passes)
            x = F.batch_norm(x, None, None, weight=s[0, 0] + 1.0, bias=s[0, 1], training=True, eps=1e-8)
            return x, style
        # instance-norm statistics on the [B, H*W, C] view of the channels-last memory
        # (a reduction over the outer axis: vectorised, unlike var_mean over (2, 3) here)
        x = x.contiguous(memory_format=cl)          # no-op here; makes ``rows`` a view of x
        b, _, h, wd = x.shape
        rows = x.permute(0, 2, 3, 1).view(b, h * wd, c)
        rows.sub_(rows.mean(dim=1, keepdim=True))
        var = rows.square().mean(dim=1)                                   # [B, C]
        rows.mul_(((s[:, 0] + 1.0) * torch.rsqrt(var + 1e-8)).unsqueeze(1)).add_(s[:, 1].unsqueeze(1))
        return x, style


class ToRGB(nn.Module):
    """1x1 convolution to image channels with a bias, no activation."""

    def __init__(self, in_channels: int, out_channels: int = 3):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(out_channels))      # registered first: GenForce key order
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.scale = 1.0 / math.sqrt(in_channels)
        self._cache = WeightCache()

    def train(self, mode: bool = True):
        self._cache.clear()
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale) + self.bias.view(1, -1, 1, 1)

    def forward_fast(self, x: torch.Tensor, path: str) -> torch.Tensor:
        if self.training:
            return self.forward(x)
        w = self._cache.get("w", (self.weight,), lambda: self.weight * self.scale)
        if path == "exact":
            return F.conv2d(x, w) + self.bias.view(1, -1, 1, 1)
        # relaxed: a GEMM on the channels-last rows (a 1x1 conv to 3 channels takes ATen's
        # slow non-oneDNN path)
        b, c, h, wd = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(b * h * wd, c)
        out = torch.addmm(self.bias, rows, w.view(w.shape[0], c).t())
        return out.view(b, h, wd, -1).permute(0, 3, 1, 2)


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
