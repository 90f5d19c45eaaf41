"""The world map P(z) of the synthface world: latent z -> face parameters.

``WorldMap(z_dim=256, seed=0)`` is a fixed, seeded function. ``truth(z)`` turns a
batch of latents ``z`` [N, z_dim] (numpy or torch, any float dtype) into a pandas
DataFrame of float32 columns: every parameter the renderer needs
(``synthface.renderer.PARAM_NAMES``) plus the flags ``old`` and ``concept``.

Construction (all of it seeded by ``seed``):

1. Sources. A random orthogonal matrix gives 3 x 32 orthonormal, dense projections of
   z: ``a = Qa z``, ``b = Qb z``, ``w = Qw z`` (independent standard normals, each
   a mix of *all* z coordinates).
2. Smooth nonlinearity. ``h_i = cos(beta * w_i) * a_i + sin(beta * w_i) * b_i``: a
   rotation whose angle depends on another projection. Each ``h_i`` is still
   exactly N(0, 1) and the ``h_i`` are independent, but they are nonlinear in z
   (a linear read-out of z explains only ``exp(-beta^2)`` ~ 70 % of the variance).
3. Correlation. ``f = L h`` with ``L`` the Cholesky factor of a target latent
   correlation matrix (eyes / mouth, hair length / background texture, hair colour /
   background brightness, see ``LATENT_CORR``); everything else is independent.
4. Marginals. Each factor goes through the normal CDF and a closed-form quantile
   shape (thresholds for the binary parameters; skewed shapes for pose, eyes,
   mouth), plus a few realistic dependencies on the binary factors (women have
   longer hair, older people greyer hair and more glasses).

Parameters produced (the renderer's table has their visual meaning):

=================  ===========  ==============================================================
name               range        distribution (over z ~ N(0, I))
=================  ===========  ==============================================================
female             {0, 1}       P(1) = 0.55
quality_defect     {0, 1}       P(1) = 0.05
defect_severity    [0, 1]       uniform
age                (0, 1)       logistic of a normal: bimodal-ish, P(age >= 0.5) = 0.27
old                {0, 1}       flag age >= 0.5
glasses            {0, 1}       P(1) = 0.15 (more likely when old)
glasses_style      [0, 1]       uniform
eyes_open          [0.02, 1]    1 - 0.35 exp(-0.4 n): mode ~0.7, tail toward closed (skew ~ -1.3)
mouth_open         [0, 1]       0 for 1/3 of z (closed), else 0.26 (n - n_1/3)^1.25, clipped
pose               [-1, 1]      0.09 (exp(0.85 n) - e^0.361): mostly frontal, long tail to + (skew ~3)
hair_color         [0, 1]       u^1.3 (more dark than light)
hair_grey          [0, 1]       ((age - 0.3) / 0.6)^1.2 x a random share: grey only when older
hair_length        [0, 1]       ~ uniform; +1.2 sd for women, shorter when old
hairstyle          [0, 1]       u^1.4 (0 straight .. 1 curly)
hair_part          [0, 1]       uniform
bg_mean            [0, 1]       uniform
bg_std             [0, 1]       (e^(3.4 u) - 1) / (e^3.4 - 1): skewed toward smooth backgrounds (the renderer's
                                texture amplitude is linear in it, so the drawn amplitude is e^(3.4 u))
bg_hue             [0, 1]       uniform
bg_tex_a, _b       [0, 1]       uniform (periodic texture angles)
skin_tone          [0, 1]       u^1.6 (more light than dark)
face_width, jaw    [0, 1]       uniform
beard              [0, 1]       uniform (drawn for men only)
brow, lip_color    [0, 1]       uniform
iris_color         [0, 1]       u^1.3
light_dir          [0, 1]       uniform (angle)
light_strength     [0, 1]       uniform
head_dx, _dy, _sc  [-1, 1]      n / 2.5, clipped
cloth_color        [0, 1]       uniform
concept            {0, 1}       flag: female, not old, no glasses, no defect (the kept set)
=================  ===========  ==============================================================

(``u`` = Phi(f) uniform, ``n`` = f standard normal.) Measured on 20,000 z: see
``tests/test_synthface_world.py``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from .renderer import PARAM_NAMES, render_batch

__all__ = ["FACTORS", "LATENT_CORR", "WorldMap"]

# latent factors, one independent source each (order fixes which projections feed which factor)
FACTORS = ["female", "quality_defect", "defect_severity", "age", "glasses", "glasses_style", "eyes_open",
           "mouth_open", "pose", "hair_color", "hair_grey", "hair_length", "hairstyle", "hair_part", "bg_mean",
           "bg_std", "bg_hue", "bg_tex_a", "bg_tex_b", "skin_tone", "face_width", "jaw", "beard", "brow",
           "lip_color", "iris_color", "light_dir", "light_strength", "head_dx", "head_dy", "head_scale",
           "cloth_color"]

# latent correlations (before the marginal transforms), chosen so that the stage-4 scores of
# rendered concept faces show eyes/mouth ~ -0.38, hair length/background std ~ -0.17 and
# hair colour/background mean ~ +0.14 (overview section 3)
LATENT_CORR = {("eyes_open", "mouth_open"): -0.46,
               ("hair_length", "bg_std"): -0.21,
               ("hair_color", "bg_mean"): 0.15}

P_FEMALE, P_DEFECT, P_GLASSES, P_OLD = 0.55, 0.05, 0.15, 0.27
BETA = 0.6                     # strength of the nonlinearity (angle per unit of the w projection)


class WorldMap:
    """Fixed, seeded map z -> face parameters (see the module docstring)."""

    def __init__(self, z_dim: int = 256, seed: int = 0):
        k = len(FACTORS)
        if z_dim < 3 * k:
            raise ValueError(f"z_dim must be >= {3 * k} (3 projections per factor), got {z_dim}")
        self.z_dim = int(z_dim)
        self.seed = int(seed)
        rng = np.random.default_rng([20250411, self.seed])
        q, r = np.linalg.qr(rng.standard_normal((z_dim, z_dim)))
        q = q * np.sign(np.diag(r))[None, :]
        rows = q.T[rng.permutation(z_dim)[:3 * k]]            # 3k orthonormal rows, dense
        self._proj = rows.astype(np.float64)                  # [3k, z_dim]: a, b, w blocks
        c = np.eye(k)
        for (n1, n2), v in LATENT_CORR.items():
            i, j = FACTORS.index(n1), FACTORS.index(n2)
            c[i, j] = c[j, i] = v
        self.latent_corr = c
        self._chol = np.linalg.cholesky(c)
        self._idx = {n: i for i, n in enumerate(FACTORS)}

    # ------------------------------------------------------------------ latents
    def sample_z(self, n: int, seed: int = 0, as_torch: bool = False):
        """``n`` standard-normal latents [n, z_dim] float32 from the seeded stream ``seed``."""
        z = np.random.default_rng(int(seed)).standard_normal((int(n), self.z_dim), dtype=np.float32)
        if as_torch:
            import torch          # here, not at the top: the world itself needs only numpy (fast import)
            return torch.from_numpy(z)
        return z

    def factors(self, z) -> np.ndarray:
        """Correlated standard-normal latent factors f [N, len(FACTORS)] (float64)."""
        z = _as_numpy(z)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {tuple(z.shape)}")
        k = len(FACTORS)
        s = z.astype(np.float64) @ self._proj.T
        a, b, w = s[:, :k], s[:, k:2 * k], s[:, 2 * k:]
        h = np.cos(BETA * w) * a + np.sin(BETA * w) * b
        return h @ self._chol.T

    # ------------------------------------------------------------------ parameters
    def truth(self, z) -> pd.DataFrame:
        """Face parameters of each latent: DataFrame [N, PARAM_NAMES + old, concept], float32."""
        f = self.factors(z)
        g = {n: f[:, i] for n, i in self._idx.items()}
        u = {n: ndtr(v) for n, v in g.items()}
        out = {}
        female = (g["female"] > ndtri(1.0 - P_FEMALE)).astype(np.float64)
        out["female"] = female
        out["quality_defect"] = (g["quality_defect"] > ndtri(1.0 - P_DEFECT)).astype(np.float64)
        out["defect_severity"] = u["defect_severity"]
        t_old = ndtri(1.0 - P_OLD)
        age = 1.0 / (1.0 + np.exp(-2.5 * (g["age"] - t_old)))
        out["age"] = age
        gl = (g["glasses"] + 0.6 * g["age"]) / np.sqrt(1.36)
        out["glasses"] = (gl > ndtri(1.0 - P_GLASSES)).astype(np.float64)
        out["glasses_style"] = u["glasses_style"]
        out["eyes_open"] = np.clip(1.0 - 0.35 * np.exp(-0.4 * g["eyes_open"]), 0.02, 1.0)
        out["mouth_open"] = np.clip(0.26 * np.maximum(g["mouth_open"] - ndtri(1.0 / 3.0), 0.0) ** 1.25, 0.0, 1.0)
        out["pose"] = np.clip(0.09 * (np.exp(0.85 * g["pose"]) - np.exp(0.36125)), -1.0, 1.0)
        out["hair_color"] = u["hair_color"] ** 1.3
        greying = np.clip((age - 0.3) / 0.6, 0.0, 1.0) ** 1.2
        out["hair_grey"] = np.clip(1.3 * greying * (0.35 + 0.65 * u["hair_grey"]), 0.0, 1.0)
        # women have longer hair, older people a little shorter (std of the mix ~ 1.07)
        s_len = g["hair_length"] + 1.2 * (female - P_FEMALE) - 0.35 * (age - 0.3)
        out["hair_length"] = ndtr(s_len / 1.07)
        out["hairstyle"] = u["hairstyle"] ** 1.4
        out["hair_part"] = u["hair_part"]
        out["bg_std"] = np.expm1(3.4 * u["bg_std"]) / np.expm1(3.4)
        for n in ("bg_mean", "bg_hue", "bg_tex_a", "bg_tex_b", "face_width", "jaw", "beard", "brow",
                  "lip_color", "light_dir", "light_strength", "cloth_color"):
            out[n] = u[n]
        out["skin_tone"] = u["skin_tone"] ** 1.6
        out["iris_color"] = u["iris_color"] ** 1.3
        for n in ("head_dx", "head_dy", "head_scale"):
            out[n] = np.clip(g[n] / 2.5, -1.0, 1.0)
        df = pd.DataFrame({n: out[n].astype(np.float32) for n in PARAM_NAMES})
        df["old"] = (age >= 0.5).astype(np.float32)
        df["concept"] = ((female > 0.5) & (age < 0.5) & (out["glasses"] < 0.5)
                         & (out["quality_defect"] < 0.5)).astype(np.float32)
        return df

    @staticmethod
    def numeric_columns() -> list:
        """The renderer parameters (continuous and 0/1), in a fixed order."""
        return list(PARAM_NAMES)

    @staticmethod
    def flag_columns() -> list:
        return ["female", "quality_defect", "glasses", "old", "concept"]

    def render_z(self, z, resolution: int = 128, return_params: bool = False):
        """``render_batch(truth(z))``: (rgb [N, H, W, 3], mask [N, H, W]) (and the parameters)."""
        params = self.truth(z)
        rgb, mask = render_batch(params, resolution)
        return (rgb, mask, params) if return_params else (rgb, mask)


def _as_numpy(z) -> np.ndarray:
    if hasattr(z, "detach"):
        z = z.detach().cpu().numpy()
    return np.asarray(z)
