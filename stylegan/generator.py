"""Style-based generator (StyleGAN v1) with GenForce-compatible parameter names.

``StyleGANGenerator`` = ``mapping`` (z -> w) + ``truncation`` (w -> per-layer wp,
holds ``w_avg``) + ``synthesis`` (wp -> image). Each part is usable on its own so
that later stages can enter the network from z, w or wp, and so that the
fine-tuned variants (``stylegan_modified``) can swap the mapping network while
keeping everything else.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .config import NetworkConfig
from .layers import EqualizedDense, SynthesisLayer, ToRGB, pixel_norm

INIT_RES = 4


@dataclass(frozen=True)
class GeneratorConfig(NetworkConfig):
    """Architecture settings. Defaults are GenForce's ``StyleGANGenerator(resolution=256)``."""
    resolution: int = 256
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_fmaps: int = 512
    mapping_lr_mul: float = 0.01
    fmaps_base: int = 16 << 10
    fmaps_max: int = 512
    image_channels: int = 3
    fused_scale: str | bool = "auto"   # 'auto': transposed-conv upsampling from 128 px on

    def __post_init__(self):
        self._validate()

    @property
    def num_layers(self) -> int:
        return 2 * (int(math.log2(self.resolution)) - 1)



class MappingNetwork(nn.Module):
    """Pixel-norm of the input, then ``num_layers`` dense layers each followed by LReLU.

    ``in_dim`` is the width of the (possibly extended) input; subclasses that
    concatenate an embedding to z override :meth:`embed`.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, lr_mul: float):
        super().__init__()
        self.in_dim = in_dim
        self.num_layers = num_layers
        for i in range(num_layers):
            fan_in = in_dim if i == 0 else hidden_dim
            fan_out = out_dim if i == num_layers - 1 else hidden_dim
            self.add_module(f"dense{i}", EqualizedDense(fan_in, fan_out, lr_mul=lr_mul))

    def embed(self, z: torch.Tensor, label: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """Turn (z, label) into the vector that is pixel-normalised. Unconditional: z itself."""
        return z, {}

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> dict:
        x, extra = self.embed(z, label)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"mapping input must have shape [B, {self.in_dim}], got {tuple(x.shape)}")
        x = pixel_norm(x)
        w = x
        for i in range(self.num_layers):
            w = getattr(self, f"dense{i}")(w)
        return {"z": x, "label": label, "w": w, **extra}


class Truncation(nn.Module):
    """Broadcasts w to every synthesis layer and applies the truncation trick.

    Layers with index < ``trunc_layers`` get ``w_avg + psi * (w - w_avg)`` when
    ``psi < 1``; ``w_avg`` is a buffer updated during training.
    """

    def __init__(self, w_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        self.w_dim = w_dim
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, w: torch.Tensor, trunc_psi: float | None = None,
                trunc_layers: int | None = None) -> torch.Tensor:
        if w.ndim == 2:
            wp = w.unsqueeze(1).repeat(1, self.num_layers, 1)
        else:
            wp = w
        if wp.shape[1:] != (self.num_layers, self.w_dim):
            raise ValueError(f"wp must have shape [B, {self.num_layers}, {self.w_dim}], got {tuple(wp.shape)}")
        psi = 1.0 if trunc_psi is None else float(trunc_psi)
        layers = 0 if trunc_layers is None else int(trunc_layers)
        if psi < 1.0 and layers > 0:
            coef = torch.ones(1, self.num_layers, 1, dtype=wp.dtype, device=wp.device)
            coef[:, :layers] = psi
            avg = self.w_avg.view(1, 1, -1)
            wp = avg + (wp - avg) * coef
        return wp


class SynthesisNetwork(nn.Module):
    """wp [B, num_layers, w_dim] -> image [B, C, R, R] (nominal range [-1, 1], no tanh)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.num_layers = cfg.num_layers
        self.register_buffer("lod", torch.zeros(()))
        n_blocks = self.num_layers // 2
        for b in range(n_blocks):
            res = INIT_RES * 2 ** b
            ch = cfg.channels(res)
            if b == 0:
                first = SynthesisLayer("const", ch, ch, res, cfg.w_dim)
            else:
                kind = "up_fused" if cfg.fused(res) else "up"
                first = SynthesisLayer(kind, cfg.channels(res // 2), ch, res, cfg.w_dim)
            self.add_module(f"layer{2 * b}", first)
            self.add_module(f"layer{2 * b + 1}", SynthesisLayer("conv", ch, ch, res, cfg.w_dim))
            self.add_module(f"output{b}", ToRGB(ch, cfg.image_channels))

    def forward(self, wp: torch.Tensor, randomize_noise: bool = False,
                generator: torch.Generator | None = None) -> dict:
        if float(self.lod) != 0.0:
            raise ValueError(f"synthesis.lod is {float(self.lod)}; only finished models (lod 0) are supported")
        if wp.ndim != 3 or wp.shape[1] != self.num_layers:
            raise ValueError(f"wp must have shape [B, {self.num_layers}, w_dim], got {tuple(wp.shape)}")
        out = {"wp": wp}
        x = None
        for i in range(self.num_layers):
            x, style = getattr(self, f"layer{i}")(x, wp[:, i], randomize_noise, generator)
            out[f"style{i:02d}"] = style
        out["image"] = getattr(self, f"output{self.num_layers // 2 - 1}")(x)
        return out


class StyleGANGenerator(nn.Module):
    """The generator. ``forward(z)`` returns a dict with ``z`` (pixel-normalised),
    ``label``, ``w``, ``wp``, ``style00``..., and ``image``.

    Training-mode behaviour follows GenForce: ``w_avg`` tracks the batch mean of
    w (decay ``w_moving_decay``) and, with probability ``style_mixing_prob``, the
    layers from a random cutoff on take the w of a second random z. Here the
    randomness is drawn from an explicit ``torch.Generator`` (``generator``), so
    it is reproducible; eval mode does neither.
    """

    def __init__(self, cfg: GeneratorConfig | None = None, mapping: MappingNetwork | None = None):
        super().__init__()
        self.cfg = cfg or GeneratorConfig()
        c = self.cfg
        self.mapping = mapping or MappingNetwork(c.z_dim, c.mapping_fmaps, c.w_dim, c.mapping_layers,
                                                 c.mapping_lr_mul)
        self.truncation = Truncation(c.w_dim, c.num_layers)
        self.synthesis = SynthesisNetwork(c)

    @property
    def num_layers(self) -> int:
        return self.cfg.num_layers

    def _as_float32(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        t = torch.as_tensor(t)
        return t.to(dtype=torch.float32, device=self.truncation.w_avg.device)

    def mix_styles(self, wp: torch.Tensor, wp2: torch.Tensor, cutoff: torch.Tensor | int) -> torch.Tensor:
        """Layers ``>= cutoff`` take ``wp2``. ``cutoff`` may be per sample ([B]); a cutoff
        of ``num_layers`` or more (or negative) means no mixing for that sample."""
        cutoff = torch.as_tensor(cutoff, device=wp.device).reshape(-1, 1)
        idx = torch.arange(self.num_layers, device=wp.device).view(1, -1)
        take2 = (idx >= cutoff) & (cutoff >= 0)
        return torch.where(take2.unsqueeze(-1), wp2, wp)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None, *,
                w_moving_decay: float = 0.995, style_mixing_prob: float = 0.9,
                trunc_psi: float | None = None, trunc_layers: int | None = None,
                randomize_noise: bool = False, generator: torch.Generator | None = None) -> dict:
        z = self._as_float32(z)
        label = self._as_float32(label)
        res = self.mapping(z, label)
        w = res["w"]
        if self.training and w_moving_decay < 1:
            with torch.no_grad():
                batch_avg = w.detach().mean(dim=0)
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    torch.distributed.all_reduce(batch_avg)
                    batch_avg /= torch.distributed.get_world_size()
                self.truncation.w_avg.mul_(w_moving_decay).add_(batch_avg * (1 - w_moving_decay))
        wp_in = w
        if self.training and style_mixing_prob > 0:
            z2 = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            w2 = self.mapping(z2, label)["w"]
            draw = torch.rand((), generator=generator).item()
            if draw < style_mixing_prob:
                cutoff = int(torch.randint(1, self.num_layers, (), generator=generator))
                wp_in = self.mix_styles(self.truncation(w), self.truncation(w2), cutoff)
        wp = self.truncation(wp_in, trunc_psi, trunc_layers)
        out = self.synthesis(wp, randomize_noise, generator)
        return {**res, **out}

    def synthesize_from_w(self, w: torch.Tensor, *, trunc_psi: float | None = None,
                          trunc_layers: int | None = None, randomize_noise: bool = False,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """Image from w ([B, w_dim]) or wp ([B, num_layers, w_dim])."""
        wp = self.truncation(self._as_float32(w), trunc_psi, trunc_layers)
        return self.synthesis(wp, randomize_noise, generator)["image"]


def to_signed_tensor(images_uint8_nhwc) -> torch.Tensor:
    """uint8 NHWC RGB -> float32 NCHW in [-1, 1] (x / 127.5 - 1), the inverse direction of :func:`postprocess`."""
    return torch.as_tensor(np.asarray(images_uint8_nhwc)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def postprocess(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW float -> uint8 NHWC RGB, as GenForce: (x+1)*127.5 + 0.5, clip, truncate."""
    x = images.detach().to("cpu", torch.float64).numpy()
    x = (x + 1.0) * 255.0 / 2.0 + 0.5
    x = np.clip(x, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
