"""synthface: the procedural face world of the default (CPU) profile.

* ``synthface.renderer``: ``render(params) -> (rgb, mask)``, ``render_batch``, ``colorize_mask``,
  ``contact_sheet`` (numpy + OpenCV only).
* ``synthface.world``: ``WorldMap(z_dim, seed)``, the fixed map z -> parameters (``truth``),
  ``sample_z``, ``render_z``.

Training of the default models lives in other modules of this package and is imported
explicitly (it needs torch and the rest of the project).
"""
from .renderer import (CLASS_NAMES, DEFAULTS, PALETTE, PARAM_NAMES, PARAM_SPEC, colorize_mask, contact_sheet,
                       render, render_batch)
from .world import FACTORS, LATENT_CORR, WorldMap

__all__ = ["CLASS_NAMES", "DEFAULTS", "PALETTE", "PARAM_NAMES", "PARAM_SPEC", "colorize_mask", "contact_sheet",
           "render", "render_batch", "FACTORS", "LATENT_CORR", "WorldMap"]
