"""StyleGAN v1 discriminator with GenForce-compatible parameter names.

Layout for resolution R (block b works at R / 2**b):
``input{b}`` fromRGB 1x1 (only ``input0`` is used at lod 0); ``layer{2b}`` conv 3x3 and
``layer{2b+1}`` down-sampling conv for every block above 4x4; at 4x4 ``layer{2b}`` is
minibatch-std + conv 3x3 and ``layer{2b+1}`` the dense layer on the flattened map;
the last ``layer{2b+2}`` is the linear output (raw score, no sigmoid).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from .config import NetworkConfig
from .layers import DiscriminatorConv, EqualizedDense

INIT_RES = 4


@dataclass(frozen=True)
class DiscriminatorConfig(NetworkConfig):
    """Defaults are GenForce's ``StyleGANDiscriminator(resolution=256)``."""
    resolution: int = 256
    image_channels: int = 3
    fmaps_base: int = 16 << 10
    fmaps_max: int = 512
    mbstd_group_size: int = 4
    mbstd_channels: int = 1
    fused_scale: str | bool = "auto"

    def __post_init__(self):
        self._validate()


class StyleGANDiscriminator(nn.Module):
    """image [B, C, R, R] in [-1, 1] -> raw score [B, out_dim].

    ``head_in_extra`` widens the input of the final dense layer (used by the
    conditional discriminators, which join the label there; see
    ``stylegan_modified``)."""

    def __init__(self, cfg: DiscriminatorConfig | None = None, head_in_extra: int = 0, out_dim: int = 1):
        super().__init__()
        self.cfg = cfg = cfg or DiscriminatorConfig()
        self.register_buffer("lod", torch.zeros(()))
        n_blocks = int(math.log2(cfg.resolution)) - 1
        self.n_blocks = n_blocks
        for b in range(n_blocks):
            res = cfg.resolution // 2 ** b
            ch = cfg.channels(res)
            self.add_module(f"input{b}", DiscriminatorConv(cfg.image_channels, ch, kernel_size=1))
            if res > INIT_RES:
                down = "fused" if cfg.fused(res) else "pool"
                self.add_module(f"layer{2 * b}", DiscriminatorConv(ch, ch))
                self.add_module(f"layer{2 * b + 1}", DiscriminatorConv(ch, cfg.channels(res // 2), down=down))
            else:
                self.add_module(f"layer{2 * b}", DiscriminatorConv(ch, ch, mbstd_group=cfg.mbstd_group_size,
                                                                   mbstd_channels=cfg.mbstd_channels))
                self.add_module(f"layer{2 * b + 1}", EqualizedDense(ch * res * res, cfg.channels(res // 2)))
        self.head_index = 2 * n_blocks
        self.add_module(f"layer{self.head_index}",
                        EqualizedDense(cfg.channels(INIT_RES // 2) + head_in_extra, out_dim, gain=1.0,
                                       activation=False))

    @property
    def head(self) -> EqualizedDense:
        return getattr(self, f"layer{self.head_index}")

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Everything up to (not including) the final dense layer: [B, channels(2)]."""
        image = torch.as_tensor(image).to(torch.float32)
        r = self.cfg.resolution
        if image.ndim != 4 or tuple(image.shape[1:]) != (self.cfg.image_channels, r, r):
            raise ValueError(f"discriminator input must be [B, {self.cfg.image_channels}, {r}, {r}], "
                             f"got {tuple(image.shape)}")
        if float(self.lod) != 0.0:
            raise ValueError(f"discriminator lod is {float(self.lod)}; only lod 0 is supported")
        x = self.input0(image)
        for i in range(2 * self.n_blocks):
            x = getattr(self, f"layer{i}")(x)
        return x

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))
