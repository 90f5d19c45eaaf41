"""Starting conditional models from other checkpoints, and strict save / load (spec 04 §1.4, §11).

A conditional model is started from the unconditional base (GenForce / the synthface
generator) or from another conditional model (v3 and v4 start from v1). Exactly the keys
below may differ between the source state dict and the new model; every other key must be
present with the same shape, and anything else is a :class:`CheckpointError` naming it:

* generator: :data:`G_ALLOWED_DIFFERENCES` = ``mapping.dense0.weight`` (its input widens
  from ``z_dim (+E_src)`` to ``z_dim + E``) and ``mapping.label_weight`` (new, or with
  other rows / columns);
* discriminator: ``layer{head}.weight`` and ``layer{head}.bias`` (``layer14`` at 256 px; its
  input widens from 512 (+L_src) to 512 + L), see :func:`d_allowed_differences`.

How the differing tensors start (defaults first; the original's behaviour is an option):

``dense0="keep"``
    the source's ``z`` columns of ``dense0.weight`` are copied; label columns that carry
    over (below) are copied too, the others start at **zero**. Because the pixel norm runs
    over ``z`` and the embedding together, a generator started from the base reproduces the
    base exactly when the embedding is zero (label 0) — training starts from the pretrained
    mapping. ``dense0="reinit"``: the freshly initialised layer (stored ~N(0, 100²)), as the
    original did for every load (defect D4); ``dense0.bias`` keeps the source's either way.
``label_weight="auto"``
    when the source is conditional, all target label names are among the source's and E is
    the same, the matching rows of the source's ``label_weight`` (and the matching label
    columns of ``dense0``) are taken: v4 (eyes, mouth, pose) from v1 starts as v1 with the
    other four labels at 0. Otherwise (the base, or v3's wider E) ``label_weight`` keeps its
    fresh ``randn`` init. ``label_weight="fresh"``: always the fresh init (the original).
``head="keep"``
    D's feature columns of the last dense layer are copied and rescaled by
    √(fan_in_new / fan_in_old), so the effective weight (stored · 1/√fan_in) is unchanged;
    carried-over label columns likewise, the others zero; the bias is kept. So D(x, y)
    starts equal to the source's score. ``head="reinit"``: fresh weight, bias 0 (the original).

Every ``init_*_from`` returns a dict key -> what was done, for the stage's ``metrics.json``.
"""
from __future__ import annotations

import math
import os
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn

from pipeline.checkpoint import CheckpointError, load_state_dict_strict, read_checkpoint, save_checkpoint, select_entry

from .conditional import (CONDITIONAL_MBSTD_GROUP, ConditionalDiscriminator, ConditionalGenerator, ConditionalSpec,
                          build_discriminator, build_generator, get_spec)

G_ALLOWED_DIFFERENCES = ("mapping.dense0.weight", "mapping.label_weight")
INIT_MODES = ("keep", "reinit")
LABEL_WEIGHT_MODES = ("auto", "fresh")


def d_allowed_differences(d: ConditionalDiscriminator) -> tuple[str, str]:
    """The last dense layer's keys (``layer14.*`` at 256 px)."""
    return (f"layer{d.head_index}.weight", f"layer{d.head_index}.bias")


def _label_rows(source: ConditionalSpec | None, target: ConditionalSpec, mode: str) -> list[int] | None:
    """Indices of the target's labels among the source's, when they carry over (see the module doc)."""
    if mode not in LABEL_WEIGHT_MODES:
        raise ValueError(f"label_weight must be one of {LABEL_WEIGHT_MODES}, got {mode!r}")
    if mode == "fresh" or source is None or not set(target.label_names) <= set(source.label_names):
        return None
    return [source.label_names.index(n) for n in target.label_names]


def _check_source_labels(state: Mapping, source: ConditionalSpec | None, what: str) -> None:
    """The source's ``label_weight`` must match ``source_spec`` (or be absent for an unconditional source)."""
    key = "mapping.label_weight"
    t = state.get(key)
    if source is None:
        if t is not None:
            raise CheckpointError(f"{what}: the source has {key} {tuple(t.shape)}, i.e. it is conditional; "
                                  f"pass source_spec (e.g. 'v1')")
        return
    expected = (source.label_dim, source.embed_dim)
    if t is None:
        raise CheckpointError(f"{what}: state_dict does not match source_spec; missing keys: {key}")
    if tuple(t.shape) != expected:
        raise CheckpointError(f"{what}: state_dict does not match source_spec; mis-shaped keys: "
                              f"{key} (checkpoint {tuple(t.shape)}, source_spec {expected})")


def _fresh(model: nn.Module, keys) -> dict:
    own = model.state_dict()
    return {k: own[k].detach().clone() for k in keys}


def init_generator_from(g: ConditionalGenerator, state: Mapping[str, torch.Tensor], *,
                        source_spec: ConditionalSpec | str | None = None, dense0: str = "keep",
                        label_weight: str = "auto", what: str = "generator") -> dict:
    """Load ``state`` (an unconditional base G, or a conditional G described by ``source_spec``)
    into ``g``; only :data:`G_ALLOWED_DIFFERENCES` may differ (module docstring)."""
    if dense0 not in INIT_MODES:
        raise ValueError(f"dense0 must be one of {INIT_MODES}, got {dense0!r}")
    src = get_spec(source_spec) if source_spec is not None else None
    z_dim, e_src = g.cfg.z_dim, (src.embed_dim if src else 0)
    rows = _label_rows(src, g.spec, label_weight)
    if rows is not None and src.embed_dim != g.spec.embed_dim:
        rows = None
    _check_source_labels(state, src, what)
    w_src = state.get("mapping.dense0.weight")
    if w_src is None and dense0 == "keep":
        raise CheckpointError(f"{what}: state_dict does not match the model; missing keys: mapping.dense0.weight "
                              f"(needed for dense0='keep')")
    if w_src is not None and tuple(w_src.shape) != (g.mapping.dense0.weight.shape[0], z_dim + e_src):
        raise CheckpointError(f"{what}: state_dict does not match the model; mis-shaped keys: mapping.dense0.weight "
                              f"(checkpoint {tuple(w_src.shape)}, expected [{g.mapping.dense0.weight.shape[0]}, "
                              f"{z_dim + e_src}] for a source with embedding width {e_src})")
    fresh = _fresh(g, G_ALLOWED_DIFFERENCES)
    load_state_dict_strict(g, state, what=what, allowed_to_differ=G_ALLOWED_DIFFERENCES)
    done = {}
    with torch.no_grad():
        if rows is not None:
            g.mapping.label_weight.copy_(state["mapping.label_weight"][rows])
            done["mapping.label_weight"] = f"rows {rows} of the source's label_weight ({', '.join(g.label_names)})"
        else:
            g.mapping.label_weight.copy_(fresh["mapping.label_weight"])
            done["mapping.label_weight"] = "fresh randn init"
        if dense0 == "reinit":
            g.mapping.dense0.weight.copy_(fresh["mapping.dense0.weight"])
            done["mapping.dense0.weight"] = "fresh init (the original's re-randomised first mapping layer)"
        else:
            w = torch.zeros_like(g.mapping.dense0.weight)
            w[:, :z_dim] = w_src[:, :z_dim]
            if rows is not None:
                w[:, z_dim:] = w_src[:, z_dim:]
                done["mapping.dense0.weight"] = "source's z and label columns"
            else:
                done["mapping.dense0.weight"] = "source's z columns, label columns zero"
            g.mapping.dense0.weight.copy_(w)
    return done


def init_discriminator_from(d: ConditionalDiscriminator, state: Mapping[str, torch.Tensor], *,
                            source_spec: ConditionalSpec | str | None = None, head: str = "keep",
                            label_columns: str = "auto", what: str = "discriminator") -> dict:
    """Load ``state`` (an unconditional base D, or a conditional D described by ``source_spec``)
    into ``d``; only the last dense layer may differ (module docstring)."""
    if head not in INIT_MODES:
        raise ValueError(f"head must be one of {INIT_MODES}, got {head!r}")
    src = get_spec(source_spec) if source_spec is not None else None
    wkey, bkey = d_allowed_differences(d)
    n_feat = d.head.weight.shape[1] - d.spec.label_dim
    l_src = src.label_dim if src else 0
    rows = _label_rows(src, d.spec, label_columns)
    w_src = state.get(wkey)
    for key in (wkey, bkey):
        if key not in state and head == "keep":
            raise CheckpointError(f"{what}: state_dict does not match the model; missing keys: {key} "
                                  f"(needed for head='keep')")
    if w_src is not None and tuple(w_src.shape) != (d.head.weight.shape[0], n_feat + l_src):
        raise CheckpointError(f"{what}: state_dict does not match the model; mis-shaped keys: {wkey} "
                              f"(checkpoint {tuple(w_src.shape)}, expected [{d.head.weight.shape[0]}, {n_feat + l_src}] "
                              f"for a source with {l_src} labels)")
    fresh = _fresh(d, (wkey, bkey))
    load_state_dict_strict(d, state, what=what, allowed_to_differ=(wkey, bkey))
    done = {}
    with torch.no_grad():
        if head == "reinit":
            d.head.weight.copy_(fresh[wkey])
            d.head.bias.copy_(fresh[bkey])
            done[wkey] = "fresh init, bias 0 (the original's)"
            done[bkey] = "zero"
            return done
        factor = math.sqrt((n_feat + d.spec.label_dim) / (n_feat + l_src))
        w = torch.zeros_like(d.head.weight)
        w[:, :n_feat] = w_src[:, :n_feat] * factor
        if rows is not None:
            w[:, n_feat:] = w_src[:, [n_feat + r for r in rows]] * factor
            done[wkey] = f"source's feature and label columns {rows}, rescaled by {factor:.6f} (same effective weight)"
        else:
            done[wkey] = f"source's feature columns rescaled by {factor:.6f} (same effective weight), label columns zero"
        d.head.weight.copy_(w)
        d.head.bias.copy_(state[bkey])
        done[bkey] = "source's"
    return done


# ------------------------------------------------------------------------------------ files

def state_dict_from(source, key: str | None = None, what: str = "checkpoint") -> dict:
    """A state dict from a path or a dict: ``key`` selects an entry of a wrapper dict; without it
    the object must itself be a state dict (every value a tensor)."""
    obj = read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    if key is not None:
        return select_entry(obj, key, source if isinstance(source, (str, os.PathLike)) else what)
    if not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{what}: not a plain state dict (it has the entries {sorted(map(str, obj))}); "
                              f"pass key= to choose one")
    return dict(obj)


def save_state_dict(model: nn.Module, path: str | os.PathLike) -> None:
    """Atomic ``torch.save`` of the plain state dict (the original's file layout)."""
    save_checkpoint({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, path)


def _label(source, name: str) -> str:
    return f"{name} {source}" if isinstance(source, (str, os.PathLike)) else name


def load_generator(source, cfg=None, spec: ConditionalSpec | str = "v1", key: str | None = None) -> ConditionalGenerator:
    """A saved conditional generator (path or state dict), loaded strictly (every key, every shape), in eval mode."""
    g = build_generator(cfg, spec)
    load_state_dict_strict(g, state_dict_from(source, key, "generator"), what=_label(source, "conditional generator"))
    return g.eval()


def load_discriminator(source, cfg=None, spec: ConditionalSpec | str = "v1", key: str | None = None,
                       mbstd_group_size: int | None = CONDITIONAL_MBSTD_GROUP) -> ConditionalDiscriminator:
    """A saved conditional discriminator (path or state dict), loaded strictly, in eval mode."""
    d = build_discriminator(cfg, spec, mbstd_group_size=mbstd_group_size)
    load_state_dict_strict(d, state_dict_from(source, key, "discriminator"),
                           what=_label(source, "conditional discriminator"))
    return d.eval()


# ------------------------------------------------------------------------------------ data-informed label path

def regress_label_path(g: ConditionalGenerator, z, labels, use, hold=None, *, ridge: float = 1.0,
                       embed_std: float = 0.2, seed: int = 0) -> dict:
    """Start the label path from a linear read-out of the labels from z (``dense0='regress'``).

    ``z`` [N, z_dim] and ``labels`` [N, L] (the generator's label order) of the training images
    (the kept set's stage-1 latents and their scores). A ridge fit ``labels ≈ B z`` over the
    labels in ``use`` and ``hold`` (default: all the generator's other labels) gives, through its
    pseudo-inverse, latent directions ``D`` (one per used label) that move that label's read-out
    by one unit and leave every other read-out unchanged; with the oblique projection
    ``P = I − D B_use`` the first mapping layer becomes

        dense0(z, e) = W_z P z + W_z D label_use      (W_z: the start's z columns)

    i.e. G(z, label) starts as the start generator at the latent ``P z + D label_use``: the
    latent's own value of each used property is replaced by the label's, the held properties
    (hair, background) and everything the labels do not read stay z's. ``label_weight`` rows of the
    used labels are drawn N(0, embed_std²) (seeded; small, so the pixel norm barely sees the
    embedding), the other rows are zero, and the label columns of ``dense0`` map the embedding
    back to ``W_z D label_use`` exactly. Returns what was done (and the read-out R² per label)."""
    z = torch.as_tensor(np.asarray(z, dtype=np.float64))
    lab = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    names = list(g.label_names)
    use = list(use)
    hold = [n for n in names if n not in use] if hold is None else [n for n in hold if n not in use]
    idx = [names.index(n) for n in use + hold]
    k = len(use)
    z_dim, e_dim = g.cfg.z_dim, g.spec.embed_dim
    if z.ndim != 2 or z.shape[1] != z_dim or lab.shape != (len(z), len(names)):
        raise ValueError(f"regress_label_path needs z [N, {z_dim}] and labels [N, {len(names)}], got "
                         f"{tuple(z.shape)} and {tuple(lab.shape)}")
    if k > e_dim:
        raise ValueError(f"cannot regress {k} labels through an embedding of width {e_dim}")
    zc = z - z.mean(0)
    lc = lab[:, idx] - lab[:, idx].mean(0)
    b = torch.linalg.solve(zc.T @ zc + ridge * torch.eye(z_dim, dtype=torch.float64), zc.T @ lc).T   # [k+h, z]
    r2 = 1 - ((lc - zc @ b.T) ** 2).sum(0) / (lc ** 2).sum(0)
    d = torch.linalg.pinv(b)[:, :k]                                                                 # [z, k]
    proj = torch.eye(z_dim, dtype=torch.float64) - d @ b[:k]
    gen = torch.Generator().manual_seed(int(seed))
    rows = torch.randn(k, e_dim, generator=gen, dtype=torch.float64) * float(embed_std)
    m = torch.linalg.solve(rows @ rows.T, rows)                                                     # [k, E]
    with torch.no_grad():
        w = g.mapping.dense0.weight
        wz = w[:, :z_dim].detach().to(torch.float64)
        new = torch.zeros_like(w, dtype=torch.float64)
        new[:, :z_dim] = wz @ proj
        new[:, z_dim:] = wz @ d @ m
        w.copy_(new.to(w.dtype))
        lw = torch.zeros_like(g.mapping.label_weight, dtype=torch.float64)
        lw[[names.index(n) for n in use]] = rows
        g.mapping.label_weight.copy_(lw.to(g.mapping.label_weight.dtype))
    return {"mapping.dense0.weight": f"regressed label path: {', '.join(use)} set by the label, "
                                     f"{', '.join(hold) or 'nothing'} held at z's read-out (z columns projected, "
                                     f"label columns = the start's z columns times the directions)",
            "mapping.label_weight": f"rows of {', '.join(use)} ~ N(0, {embed_std}^2) (seed {seed}), others zero",
            "label_readout_r2": {n: round(float(v), 4) for n, v in zip(use + hold, r2)}, "ridge": ridge,
            "images": int(len(z))}
