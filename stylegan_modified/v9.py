"""StyleGAN-FineTune-v9: the v1 conditional generator with a split-and-merge mapping (spec 02 §2.1, 02a §B, §C.1).

Mapping of L dense layers (``L = mapping_layers``; 8 at 256 px, 4 on synthface):

    x   = PixelNorm(concat(z, label @ label_weight))
    z'  = dense(L-3)( ... dense0(x))                       trunk (empty when L = 2: z' = x)
    w1  = dense(L-2)(z')          w2  = dense_new0(z')     two branches read z'
    w1' = dense(L-1)(w1)          w2' = dense_new1(w2)
    w   = w1' + w2'                                        merge, nothing after it

``dense_new0``: width(z') -> 4·w_dim, ``dense_new1``: 4·w_dim -> w_dim; both weight-scaled with
the mapping's lr multiplier and LReLU 0.2, like every mapping layer. The forward returns
``w, w1, w2, w1_, w2_`` (all post-activation) besides the core's entries.

State dict: exactly the original's key order (02a §C.1): ``mapping.label_weight``,
``mapping.dense0…dense(L-1)``, ``mapping.dense_new0``, ``mapping.dense_new1``, then truncation
and synthesis as v1. At 256 px: 127 entries, 28,194,245 parameters.

Starting from v1 (:func:`init_v9_from_v1`): every key of the v1 generator loads; exactly the four
``dense_new*`` keys are missing (any other difference is a ``CheckpointError`` naming the keys)
and are drawn N(0, 0.15²) **on the stored parameters** (weights and biases) from a seeded
generator — the effective weights are then tiny (std ≈ 9.4e-5 / 4.7e-5 at 256 px), so v9 starts
as v1. The discriminator is v1's, loaded strictly (:func:`load_v9_discriminator`).
:func:`regress_new_branch` is an optional data-driven start of the new branch (a documented
CPU-budget deviation): it fits the branch so that w moves by a given per-sample Δw.

Extraction points (spec 02 §3.1) — :data:`POINTS`, :meth:`V9Generator.mid_dim`,
:meth:`V9Generator.mid_vectors` and the "remaining net" :meth:`V9Generator.image_from_mid`:

==================  ==========================  =============================================
point               mid vector                  remaining net
==================  ==========================  =============================================
``w``               w                           truncation (ψ = 1: no-op) → synthesis
``mapping_split1``  concat(w1, w2)              w = dense(L-1)(w1) + dense_new1(w2) → synthesis
``mapping_split2``  concat(w1', w2')            w = w1' + w2' → synthesis
==================  ==========================  =============================================
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.checkpoint import CheckpointError, compare_state_dict, load_state_dict_strict
from stylegan.generator import GeneratorConfig, StyleGANGenerator, postprocess
from stylegan.layers import LRELU_SLOPE, EqualizedDense, pixel_norm

from .conditional import (CONDITIONAL_MBSTD_GROUP, ConditionalDiscriminator, ConditionalGenerator, ConditionalMapping,
                          ConditionalSpec, VERSIONS, batch_ranges, build_discriminator, check_label)
from .loading import state_dict_from

V9_SPEC = dataclasses.replace(VERSIONS["v1"], style_mixing_prob=0.0)     # v1's labels; v9 trains without mixing
NEW_BRANCH_KEYS = ("mapping.dense_new0.weight", "mapping.dense_new0.bias",
                   "mapping.dense_new1.weight", "mapping.dense_new1.bias")
NEW_BRANCH_INIT_STD = 0.15
NEW_BRANCH_WIDTH = 4          # dense_new0 widens to NEW_BRANCH_WIDTH · w_dim
POINTS = ("w", "mapping_split1", "mapping_split2")


class V9Mapping(ConditionalMapping):
    """The conditional mapping with the split-and-merge head (module docstring)."""

    def __init__(self, z_dim: int, label_dim: int, embed_dim: int, hidden_dim: int, out_dim: int,
                 num_layers: int, lr_mul: float, init_std: float = NEW_BRANCH_INIT_STD):
        if num_layers < 2:
            raise ValueError(f"the v9 mapping needs at least 2 layers (one branch = the last two), got {num_layers}")
        super().__init__(z_dim, label_dim, embed_dim, hidden_dim, out_dim, num_layers, lr_mul)
        self.split_dim = z_dim + embed_dim if num_layers == 2 else hidden_dim     # width of z'
        self.branch_dim = hidden_dim                                               # width of w1
        self.new_dim = NEW_BRANCH_WIDTH * out_dim                                  # width of w2
        self.out_dim = out_dim
        self.dense_new0 = EqualizedDense(self.split_dim, self.new_dim, lr_mul=lr_mul)
        self.dense_new1 = EqualizedDense(self.new_dim, out_dim, lr_mul=lr_mul)
        with torch.no_grad():       # the original's init, on the stored parameters (global RNG: seed via the builder)
            for p in self.new_parameters():
                p.normal_(0.0, init_std)

    def new_parameters(self) -> list[nn.Parameter]:
        return [self.dense_new0.weight, self.dense_new0.bias, self.dense_new1.weight, self.dense_new1.bias]

    @property
    def last_old(self) -> EqualizedDense:
        return getattr(self, f"dense{self.num_layers - 1}")

    def trunk(self, z: torch.Tensor, label) -> tuple[torch.Tensor, dict]:
        """(z', extra): the pixel-normalised input through dense0 … dense(L-3)."""
        x, extra = self.embed(z, label)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"mapping input must have shape [B, {self.in_dim}], got {tuple(x.shape)}")
        x = pixel_norm(x)
        h = x
        for i in range(self.num_layers - 2):
            h = getattr(self, f"dense{i}")(h)
        return h, {"z": x, **extra}

    def forward(self, z: torch.Tensor, label=None) -> dict:
        h, extra = self.trunk(z, label)
        w1 = getattr(self, f"dense{self.num_layers - 2}")(h)
        w2 = self.dense_new0(h)
        w1_ = self.last_old(w1)
        w2_ = self.dense_new1(w2)
        return {"label": label, **extra, "w": w1_ + w2_, "w1": w1, "w2": w2, "w1_": w1_, "w2_": w2_}


class V9Generator(ConditionalGenerator):
    """The v1 conditional generator with :class:`V9Mapping`; ``forward(z, label)`` as v1's (style
    mixing off by default), plus the extraction points of spec 02 §3.1."""

    def __init__(self, cfg: GeneratorConfig | None = None, spec: ConditionalSpec = V9_SPEC,
                 init_std: float = NEW_BRANCH_INIT_STD):
        cfg = cfg or GeneratorConfig()
        mapping = V9Mapping(cfg.z_dim, spec.label_dim, spec.embed_dim, cfg.mapping_fmaps, cfg.w_dim,
                            cfg.mapping_layers, cfg.mapping_lr_mul, init_std)
        # the core generator with our mapping; ConditionalGenerator.__init__ would build a v1 mapping
        StyleGANGenerator.__init__(self, cfg, mapping=mapping)
        self.spec = spec

    # ---------------------------------------------------------------- extraction points
    def mid_dim(self, point: str) -> int:
        check_point(point)
        m = self.mapping
        return {"w": m.out_dim, "mapping_split1": m.branch_dim + m.new_dim, "mapping_split2": 2 * m.out_dim}[point]

    def mid_from_mapping(self, res: dict, point: str) -> torch.Tensor:
        """The mid vector of ``point`` from a mapping forward's output."""
        check_point(point)
        if point == "w":
            return res["w"]
        if point == "mapping_split1":
            return torch.cat([res["w1"], res["w2"]], dim=1)
        return torch.cat([res["w1_"], res["w2_"]], dim=1)

    def w_from_mid(self, mid: torch.Tensor, point: str) -> torch.Tensor:
        """w [B, w_dim] from mid vectors [B, mid_dim(point)] (the mapping part of the remaining net; differentiable)."""
        d = self.mid_dim(point)
        if mid.ndim != 2 or mid.shape[1] != d:
            raise ValueError(f"{point} mid vectors must have shape [B, {d}], got {tuple(mid.shape)}")
        m = self.mapping
        if point == "w":
            return mid
        if point == "mapping_split1":
            return m.last_old(mid[:, :m.branch_dim]) + m.dense_new1(mid[:, m.branch_dim:])
        return mid[:, :m.out_dim] + mid[:, m.out_dim:]

    @torch.inference_mode()
    def mid_vectors(self, z, label, point: str, *, batch_size: int | None = None) -> torch.Tensor:
        """Mid vectors [N, mid_dim(point)] for z [N, z_dim] and labels [N, L] (eval semantics)."""
        dev = self.truncation.w_avg.device
        z = torch.as_tensor(z).to(dtype=torch.float32, device=dev)
        label = check_label(label, z.shape[0], self.spec.label_dim, dev)
        out = [self.mid_from_mapping(self.mapping(z[a:b], label[a:b]), point) for a, b in batch_ranges(len(z), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.mid_dim(point))

    @torch.inference_mode()
    def image_from_mid(self, mid, point: str, *, batch_size: int | None = None, trunc_psi: float = 1.0,
                       trunc_layers: int = 0, randomize_noise: bool = False,
                       noise_seed: int | None = None, plan=None) -> torch.Tensor:
        """The remaining net: images [N, 3, R, R] in [-1, 1] from (edited) mid vectors, with the same
        semantics as :func:`stylegan_modified.conditional.synthesize` (stored noise unless
        ``randomize_noise``, ``w_avg`` untouched), in batches of ``batch_size``; ``plan``: the
        synthesis inference path (``stylegan.generator.InferencePlan``; None: plain)."""
        dev = self.truncation.w_avg.device
        mid = torch.as_tensor(mid).to(dtype=torch.float32, device=dev)
        gen = torch.Generator(device=dev).manual_seed(int(noise_seed or 0)) if randomize_noise else None
        out = []
        for a, b in batch_ranges(len(mid), batch_size):
            wp = self.truncation(self.w_from_mid(mid[a:b], point), trunc_psi, trunc_layers)
            out.append(self.synthesis(wp, randomize_noise, gen, plan=plan)["image"])
        c = self.cfg
        return torch.cat(out) if out else torch.zeros(0, c.image_channels, c.resolution, c.resolution)

    def uint8_from_mid(self, mid, point: str, **kw) -> np.ndarray:
        return postprocess(self.image_from_mid(mid, point, **kw))


def check_point(point: str) -> None:
    if point not in POINTS:
        raise ValueError(f"unknown extraction point {point!r}; expected one of {', '.join(POINTS)}")


def build_v9_generator(cfg: GeneratorConfig | None = None, seed: int = 0,
                       init_std: float = NEW_BRANCH_INIT_STD) -> V9Generator:
    """A freshly initialised v9 generator, drawn from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        return V9Generator(cfg, init_std=init_std)


def build_v9_discriminator(cfg=None, seed: int = 0) -> ConditionalDiscriminator:
    """v9's discriminator is v1's (7 labels joined before the last dense layer, minibatch-std group 16)."""
    return build_discriminator(cfg, "v1", seed=seed, mbstd_group_size=CONDITIONAL_MBSTD_GROUP)


def init_new_branch(g: V9Generator, seed: int, std: float = NEW_BRANCH_INIT_STD) -> None:
    """Draw the four new-branch tensors N(0, std²) on the stored parameters, from a generator seeded by ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for p in g.mapping.new_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def init_v9_from_v1(g: V9Generator, source, *, seed: int = 0, std: float = NEW_BRANCH_INIT_STD,
                    key: str | None = None, what: str = "FineTune-v1 generator") -> dict:
    """Load a v1 generator (path or state dict) into ``g``: exactly the four ``dense_new*`` keys may be
    (and must be) missing; they are drawn N(0, std²) on the stored parameters (seeded). Any other
    difference is a :class:`CheckpointError` naming the keys. Returns what was done."""
    state = state_dict_from(source, key, what)
    diff = compare_state_dict(g, state)
    present = [k for k in NEW_BRANCH_KEYS if k in state]
    if present:
        raise CheckpointError(f"{what}: holds the new-branch keys {', '.join(present)}, so it is not a v1 "
                              f"checkpoint; load a v9 checkpoint with load_v9_generator")
    load_state_dict_strict(g, state, what=what, allowed_to_differ=NEW_BRANCH_KEYS)
    init_new_branch(g, seed, std)
    return {"missing": list(diff["missing"]), "unexpected": list(diff["unexpected"]),
            "new_branch_init": f"N(0, {std}^2) on the stored parameters, seed {int(seed)}"}


def drop_label_input(g: ConditionalGenerator) -> dict:
    """Zero ``mapping.label_weight`` in place, so the label no longer reaches the mapping: the output for
    any label is the output for label 0 (a documented deviation of the synthface profile,
    docs/notes/v9_regress_start.md). FineTune-v9 feeds zero labels in training, so ``label_weight``
    receives no gradient and AdamW keeps it at zero. Returns the dropped embedding's size."""
    w = g.mapping.label_weight
    before = float(w.detach().pow(2).sum())
    with torch.no_grad():
        w.zero_()
    return {"label_input": "dropped (mapping.label_weight = 0)", "label_weight_sq_norm_before": before}


def load_v9_generator(source, cfg: GeneratorConfig | None = None, key: str | None = None) -> V9Generator:
    """A saved v9 generator (path or state dict), loaded strictly, in eval mode."""
    g = build_v9_generator(cfg)
    load_state_dict_strict(g, state_dict_from(source, key, "v9 generator"),
                           what=f"v9 generator {source}" if not isinstance(source, dict) else "v9 generator")
    return g.eval()


def load_v9_discriminator(source, cfg=None, key: str | None = None) -> ConditionalDiscriminator:
    """The discriminator (v1's, from FineTune-v1 or a v9 run), loaded strictly, in eval mode."""
    d = build_v9_discriminator(cfg)
    load_state_dict_strict(d, state_dict_from(source, key, "discriminator"),
                           what=f"discriminator {source}" if not isinstance(source, dict) else "discriminator")
    return d.eval()


# ------------------------------------------------------------------------------------ branch figures

@torch.inference_mode()
def branch_stats(g: V9Generator, z, label) -> dict:
    """How much the new branch is used on (z, label): mean ‖w2'‖ / ‖w1'‖ and, for each extraction
    point, the share of the mid vectors' total variance that lies in the new branch's part."""
    label = check_label(label, len(z), g.spec.label_dim)
    res = g.mapping(torch.as_tensor(z, dtype=torch.float32), label)
    ratio = (res["w2_"].norm(dim=1) / res["w1_"].norm(dim=1).clamp_min(1e-12)).mean()
    v = {k: float(res[k].var(dim=0, unbiased=False).sum()) for k in ("w1", "w2", "w1_", "w2_")}
    # w: the variance of w explained by w2' (1 - Var(w1') / Var(w) would mix in the covariance; this is the
    # share of the sum of the two parts' variances)
    return {"norm_ratio_w2_w1": float(ratio),
            "var_share_mapping_split1": v["w2"] / max(v["w1"] + v["w2"], 1e-30),
            "var_share_mapping_split2": v["w2_"] / max(v["w1_"] + v["w2_"], 1e-30),
            "var_share_w": v["w2_"] / max(v["w1_"] + v["w2_"], 1e-30)}


# ------------------------------------------------------------------------------------ data-driven start

def concept_directions(w: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class-mean directions: for each concept k (column of ``positive`` [N, K], True = on the concept
    side), the unit vector from the negative to the positive class mean of ``w`` [N, d], and the
    offset of the midpoint between the class means along it. Returns (directions [K, d], offsets [K])."""
    w = np.asarray(w, np.float64)
    pos = np.asarray(positive, bool)
    if pos.ndim != 2 or len(pos) != len(w):
        raise ValueError(f"positive must have shape [{len(w)}, K], got {pos.shape}")
    dirs, offs = [], []
    for k in range(pos.shape[1]):
        if pos[:, k].all() or not pos[:, k].any():
            raise ValueError(f"concept {k}: both classes need samples ({int(pos[:, k].sum())} of {len(w)} positive)")
        mp, mn = w[pos[:, k]].mean(0), w[~pos[:, k]].mean(0)
        u = (mp - mn) / np.linalg.norm(mp - mn)
        dirs.append(u)
        offs.append(float(0.5 * (mp + mn) @ u))
    return np.array(dirs, np.float32), np.array(offs, np.float32)


def concept_shift(w: np.ndarray, directions: np.ndarray, offsets: np.ndarray, margin: float = 0.5,
                  sweeps: int = 10) -> np.ndarray:
    """Per-sample Δw that puts every w on the concept side of each hyperplane ``w·u_k ≥ offsets_k + margin``
    (``directions`` [K, w_dim] unit normals pointing to the concept side). Alternating projections
    (``sweeps`` passes over the K constraints), so near-orthogonal directions are met together; w
    already on the right side with the margin does not move."""
    w = np.asarray(w, np.float64)
    u = np.asarray(directions, np.float64)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    c = np.asarray(offsets, np.float64) + float(margin)
    x = w.copy()
    for _ in range(int(sweeps)):
        for k in range(len(u)):
            short = np.maximum(c[k] - x @ u[k], 0.0)
            x += short[:, None] * u[k][None, :]
    return (x - w).astype(np.float32)


def widen_off(w: np.ndarray, directions: np.ndarray, factor: float) -> np.ndarray:
    """Per-sample Δw that scales each w's deviation from the set's mean by ``factor`` in the subspace
    orthogonal to ``directions`` [K, w_dim] (the concept normals): the concept-side projections stay as
    they are, every other property's spread grows by about ``factor``. ``factor`` 1 gives zeros."""
    x = np.asarray(w, np.float64)
    q, _ = np.linalg.qr(np.asarray(directions, np.float64).T)         # [w_dim, K] orthonormal
    xc = x - x.mean(0)
    return ((float(factor) - 1.0) * (xc - (xc @ q) @ q.T)).astype(np.float32)


def _inverse_lrelu(y: torch.Tensor) -> torch.Tensor:
    return torch.where(y >= 0, y, y / LRELU_SLOPE)


def regress_new_branch(g: V9Generator, z, target_dw, label=None, *, method: str = "lstsq",
                       ridge: float = 1e-3, hidden_std: float | None = None, steps: int = 300, lr: float = 3e-3,
                       seed: int = 0) -> dict:
    """Fit the new branch so that its output w2'(z, label) ≈ ``target_dw`` [N, w_dim] (then
    w = w1' + w2' moves by the target, w1' being v1's). ``label`` defaults to zeros.

    ``method="lstsq"`` (default): ``dense_new0`` is redrawn at random (stored N(0, hidden_std²), default
    1/lr_mul = a He-scaled effective layer, seeded), and ``dense_new1`` is the ridge solution on
    the hidden layer (post LReLU) for the pre-activation target (LReLU inverted). ``"adam"``:
    from that start, ``steps`` full-batch Adam steps on the mean squared error of both new layers
    (step sizes relative to each layer's weights; the best state seen is kept, so it never ends
    worse than the least-squares start). On a tiny model random features fit a hinge-shaped target
    poorly (R² 0.50 with lstsq, 0.89 after 300 Adam steps). On the synthface v1 with 20,000 samples,
    least squares gives R² 0.81 in 23 s, and 100 Adam steps give 0.89 in 8.5 min. Held out, the two
    end within 2 points of each other on the concept shares (docs/notes/v9_regress_start.md). Use many
    samples: they cost only mapping forwards. Returns the fit's figures (R², relative residual)."""
    if method not in ("lstsq", "adam"):
        raise ValueError(f"method must be 'lstsq' or 'adam', got {method!r}")
    m = g.mapping
    dev = g.truncation.w_avg.device
    z = torch.as_tensor(np.asarray(z), dtype=torch.float32, device=dev)
    t = torch.as_tensor(np.asarray(target_dw), dtype=torch.float32, device=dev)
    if t.shape != (len(z), m.out_dim):
        raise ValueError(f"target_dw must have shape [{len(z)}, {m.out_dim}], got {tuple(t.shape)}")
    label = torch.zeros(len(z), g.spec.label_dim) if label is None else label
    label = check_label(label, len(z), g.spec.label_dim, dev)
    with torch.no_grad():
        h0, _ = m.trunk(z, label)
        h0 = h0.double()
    gen = torch.Generator().manual_seed(int(seed))
    d0, d1 = m.dense_new0, m.dense_new1
    std0 = (1.0 / d0.lr_mul) if hidden_std is None else float(hidden_std)
    with torch.no_grad():
        d0.weight.copy_(torch.randn(d0.weight.shape, generator=gen) * std0)
        d0.bias.zero_()
        hid = F.leaky_relu(F.linear(h0, (d0.weight * d0.scale).double(), (d0.bias * d0.lr_mul).double()),
                           LRELU_SLOPE)
        pre = _inverse_lrelu(t.double())
        a = torch.cat([hid, torch.ones(len(hid), 1, dtype=torch.float64)], dim=1)
        reg = ridge * torch.eye(a.shape[1], dtype=torch.float64) * (a.pow(2).sum(0).mean())
        reg[-1, -1] = 0.0
        sol = torch.linalg.solve(a.T @ a + reg, a.T @ pre)                      # [hidden + 1, w_dim]
        d1.weight.copy_((sol[:-1].T / d1.scale).float())
        d1.bias.copy_((sol[-1] / d1.lr_mul).float())
    if method == "adam":
        params = m.new_parameters()
        saved = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        # relative steps: each tensor's lr is ``lr`` times its root-mean-square (biases: their weight's),
        # so the fit behaves the same whatever the lr multiplier and the scale of w
        rms = [float(d0.weight.detach().pow(2).mean().sqrt()), float(d1.weight.detach().pow(2).mean().sqrt())]
        opt = torch.optim.Adam([{"params": [d0.weight, d0.bias], "lr": lr * rms[0]},
                                {"params": [d1.weight, d1.bias], "lr": lr * rms[1]}])
        hf, tf = h0.float(), t.float()
        with torch.no_grad():
            best = (float((d1(d0(hf)) - tf).pow(2).mean()), [p.detach().clone() for p in params])
        for _ in range(int(steps)):
            loss = (d1(d0(hf)) - tf).pow(2).mean()
            if float(loss.detach()) < best[0]:
                best = (float(loss.detach()), [p.detach().clone() for p in params])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            if float((d1(d0(hf)) - tf).pow(2).mean()) > best[0]:
                for p, b in zip(params, best[1]):
                    p.copy_(b)
        for p, sv in zip(params, saved):
            p.requires_grad_(sv)
    with torch.no_grad():
        out = d1(d0(h0.float())).double()
        tt = t.double()
        res = (out - tt).pow(2).sum()
        tot = (tt - tt.mean(0)).pow(2).sum().clamp_min(1e-30)
        rel = res.sqrt() / tt.pow(2).sum().sqrt().clamp_min(1e-30)
    return {"method": method, "n": int(len(z)), "r2": float(1 - res / tot), "relative_residual": float(rel),
            "hidden_std_stored": std0, "ridge": float(ridge), "seed": int(seed)}


__all__ = ["NEW_BRANCH_INIT_STD", "NEW_BRANCH_KEYS", "POINTS", "V9_SPEC", "V9Generator", "V9Mapping", "branch_stats",
           "build_v9_discriminator", "build_v9_generator", "check_point", "concept_directions", "concept_shift", "drop_label_input",
           "init_new_branch",
           "init_v9_from_v1", "load_v9_discriminator", "load_v9_generator", "regress_new_branch"]
