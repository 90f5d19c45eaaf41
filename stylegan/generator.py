"""Style-based generator (StyleGAN v1) with GenForce-compatible parameter names.

``StyleGANGenerator`` = ``mapping`` (z -> w) + ``truncation`` (w -> per-layer wp,
holds ``w_avg``) + ``synthesis`` (wp -> image). Each part is usable on its own so
that later stages can enter the network from z, w or wp, and so that the
fine-tuned variants (``stylegan_modified``) can swap the mapping network while
keeping everything else.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .config import NetworkConfig
from .layers import EqualizedDense, SynthesisLayer, ToRGB, WeightCache, pixel_norm

INIT_RES = 4
PATHS = ("plain", "exact", "relaxed")
# relaxed path: layers whose activation holds at least this many values per sample (256 px:
# 256 ch x 64 px on; synthface: none) run one sample at a time; a batch of 8 such maps
# (32 MiB+ each) runs slower per image than one map that stays in cache
SPLIT_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class InferencePlan:
    """How the synthesis network runs at inference (eval mode).

    ``path``: ``"plain"`` (the reference computation, GenForce's layout and order),
    ``"exact"`` (cached scaled weights, in-place steps: bit-identical to plain) or
    ``"relaxed"`` (channels-last, phase-decomposed upsampling, fused norm / style:
    within float rounding of plain, see :mod:`stylegan.layers`).
    ``compile``: wrap the synthesis in ``torch.compile`` (relaxed path only, since a
    compiled graph reorders arithmetic); if compiling fails the eager path runs and a
    warning says so. ``micro_batch``: the sampler (:func:`stylegan.sampling.generate`)
    renders in fixed micro-batches of this size, the last one padded, so that an
    image does not depend on how many are requested together; 0 = one call per request
    (the old behaviour, batch-size dependent).
    """
    path: str = "exact"
    compile: bool = False
    micro_batch: int = 8

    def __post_init__(self):
        if self.path not in PATHS:
            raise ValueError(f"inference path must be one of {PATHS}, got {self.path!r}")
        if self.compile and self.path != "relaxed":
            raise ValueError("compile=True needs path='relaxed' (a compiled graph is not bit-identical to plain)")
        if not isinstance(self.micro_batch, int) or self.micro_batch < 0:
            raise ValueError(f"micro_batch must be an int >= 0, got {self.micro_batch!r}")

    def to_dict(self) -> dict:
        return {"path": self.path, "compile": self.compile, "micro_batch": self.micro_batch}


PLAIN = InferencePlan(path="plain", micro_batch=0)
# What ``plan=None`` means: the exact path (cached scaled weights; bit-identical to plain, and
# plain itself in train mode or with autograd on), one call per request. A model's own default
# is ``synthesis.default_plan`` (:func:`stylegan.sampling.set_inference_plan`).
DEFAULT_PLAN = InferencePlan(path="exact", micro_batch=0)
# The fast path for callers that accept float rounding (within 1e-4 of plain, not byte-identical),
# in padded micro-batches of 8 so that an image does not depend on the request size.
FAST = InferencePlan(path="relaxed", micro_batch=8)


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
        self._compiled: dict = {}                 # not a module / buffer: never in the state_dict
        self.default_plan: InferencePlan = DEFAULT_PLAN   # what plan=None means (not in the state_dict)

    def noise_resolutions(self) -> list[int]:
        """Resolution of each layer's noise map, in layer order."""
        return [getattr(self, f"layer{i}").apply_noise.resolution for i in range(self.num_layers)]

    def forward(self, wp: torch.Tensor, randomize_noise: bool = False,
                generator: torch.Generator | None = None, *, plan: InferencePlan | None = None,
                noise: list[torch.Tensor] | None = None) -> dict:
        """``noise``: optional explicit maps, one [B, 1, R, R] tensor per layer (overrides
        ``randomize_noise``). ``plan``: the inference path (None: ``self.default_plan``, the
        exact path unless set otherwise; :data:`PLAIN` for the reference computation). In train
        mode or with autograd enabled every path is the plain computation."""
        if float(self.lod) != 0.0:
            raise ValueError(f"synthesis.lod is {float(self.lod)}; only finished models (lod 0) are supported")
        if wp.ndim != 3 or wp.shape[1] != self.num_layers:
            raise ValueError(f"wp must have shape [B, {self.num_layers}, w_dim], got {tuple(wp.shape)}")
        if noise is not None and len(noise) != self.num_layers:
            raise ValueError(f"noise must hold {self.num_layers} maps, got {len(noise)}")
        # the fast paths update activations in place: they run only without autograd
        # (inference_mode / no_grad) and in eval mode; otherwise the plain computation runs
        plan = self.default_plan if plan is None else plan
        path = "plain" if self.training or torch.is_grad_enabled() else plan.path
        if path != "plain" and plan.compile:
            return self._run_compiled(wp, randomize_noise, generator, noise, plan)
        return self._run(wp, randomize_noise, generator, noise, path)

    def _run(self, wp, randomize_noise, generator, noise, path: str) -> dict:
        out = {"wp": wp}
        if randomize_noise and noise is None and path == "relaxed":
            # draw the maps up front, in the plain path's order, so that splitting the batch
            # below does not change which numbers each sample gets
            noise = [torch.randn(wp.shape[0], 1, r, r, generator=generator, device=wp.device, dtype=wp.dtype)
                     for r in self.noise_resolutions()]
        x = None
        split = self.num_layers if path != "relaxed" or wp.shape[0] == 1 else self._split_layer()
        for i in range(split):
            x = self._layer(i, x, wp, randomize_noise, generator, noise, path, out)
        to_rgb = getattr(self, f"output{self.num_layers // 2 - 1}")
        if split < self.num_layers:
            # large activations one sample at a time (SPLIT_ELEMENTS), through toRGB: only the
            # 3-channel images are put together, never a batch of the last (largest) activation
            parts = []
            for b in range(wp.shape[0]):
                nb = None if noise is None else [n[b:b + 1] for n in noise]
                xb, styles = x[b:b + 1], {}
                for i in range(split, self.num_layers):
                    xb = self._layer(i, xb, wp[b:b + 1], False, None, nb, path, styles)
                parts.append((to_rgb.forward_fast(xb, path), styles))
            image = torch.cat([p[0].contiguous() for p in parts])
            for key in parts[0][1]:
                out[key] = torch.cat([p[1][key] for p in parts])
        else:
            image = to_rgb(x) if path == "plain" else to_rgb.forward_fast(x, path)
        out["image"] = image.contiguous()
        return out

    def _split_layer(self) -> int:
        """First layer run per sample on the relaxed path (see SPLIT_ELEMENTS)."""
        for i, r in enumerate(self.noise_resolutions()):
            if getattr(self, f"layer{i}").bias.shape[0] * r * r >= SPLIT_ELEMENTS:
                return i
        return self.num_layers

    def _layer(self, i, x, wp, randomize_noise, generator, noise, path, out):
        layer = getattr(self, f"layer{i}")
        n_i = None if noise is None else noise[i]
        if path == "plain":
            x, style = layer(x, wp[:, i], randomize_noise, generator, n_i)
        else:
            x, style = layer.forward_fast(x, wp[:, i], path, randomize_noise, generator, n_i)
        out[f"style{i:02d}"] = style
        return x

    def _run_compiled(self, wp, randomize_noise, generator, noise, plan: InferencePlan) -> dict:
        """torch.compile of the relaxed path, for stored or explicit noise; anything else
        (a torch.Generator), or a failure to compile, runs eagerly."""
        if randomize_noise and noise is None:
            return self._run(wp, randomize_noise, generator, noise, plan.path)
        fn = self._compiled.get(plan.path)
        if fn is None:
            try:
                WeightCache.exclude_from_compile()
                fn = torch.compile(lambda w, n: self._run(w, False, None, n, plan.path), dynamic=False)
            except Exception as e:                  # noqa: BLE001 - any backend failure: eager fallback
                warnings.warn(f"torch.compile unavailable ({type(e).__name__}: {e}); running the eager path")
                fn = False
            self._compiled[plan.path] = fn
        if fn is not False:
            try:
                return fn(wp, noise)
            except Exception as e:                  # noqa: BLE001 - compile happens on first call
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); running the eager path")
                self._compiled[plan.path] = False
        return self._run(wp, randomize_noise, generator, noise, plan.path)

    def train(self, mode: bool = True):
        self._compiled.clear()
        return super().train(mode)


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
                randomize_noise: bool = False, generator: torch.Generator | None = None,
                plan: InferencePlan | None = None) -> dict:
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
        out = self.synthesis(wp, randomize_noise, generator, plan=plan)
        return {**res, **out}

    def synthesize_from_w(self, w: torch.Tensor, *, trunc_psi: float | None = None,
                          trunc_layers: int | None = None, randomize_noise: bool = False,
                          generator: torch.Generator | None = None,
                          plan: InferencePlan | None = None) -> torch.Tensor:
        """Image from w ([B, w_dim]) or wp ([B, num_layers, w_dim])."""
        wp = self.truncation(self._as_float32(w), trunc_psi, trunc_layers)
        return self.synthesis(wp, randomize_noise, generator, plan=plan)["image"]


def to_signed_tensor(images_uint8_nhwc) -> torch.Tensor:
    """uint8 NHWC RGB -> float32 NCHW in [-1, 1] (x / 127.5 - 1), the inverse direction of :func:`postprocess`."""
    return torch.as_tensor(np.asarray(images_uint8_nhwc)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def postprocess(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW float -> uint8 NHWC RGB, as GenForce: (x+1)*127.5 + 0.5, clip, truncate."""
    x = images.detach().to("cpu", torch.float64).numpy()
    x = (x + 1.0) * 255.0 / 2.0 + 0.5
    x = np.clip(x, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
