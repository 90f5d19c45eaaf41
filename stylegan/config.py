"""Shared behaviour of the generator and discriminator configurations."""
from __future__ import annotations

from dataclasses import asdict


class NetworkConfig:
    """Mixin for the frozen config dataclasses: channel rule, fused-scale rule, (de)serialisation.

    Subclasses define ``resolution``, ``fmaps_base``, ``fmaps_max`` and ``fused_scale``.
    """

    def _validate(self) -> None:
        r = self.resolution
        if r < 8 or r & (r - 1):
            raise ValueError(f"resolution must be a power of two >= 8, got {r}")
        if self.fused_scale not in ("auto", True, False):
            raise ValueError(f"fused_scale must be 'auto', True or False, got {self.fused_scale!r}")

    def channels(self, res: int) -> int:
        """Feature maps at resolution ``res``: min(fmaps_base / res, fmaps_max)."""
        return min(self.fmaps_base // res, self.fmaps_max)

    def fused(self, res: int) -> bool:
        """Whether the up/down-sampling at ``res`` is fused into the convolution ('auto': from 128 px)."""
        return res >= 128 if self.fused_scale == "auto" else bool(self.fused_scale)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a dict (e.g. a profile block), ignoring keys that are not fields."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
