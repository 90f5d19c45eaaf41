"""The one edit call: ``edit(generator, z, label, {"eyes": a, "mouth": b, "pose": c}, method=...)``.

``method`` is a fitted :class:`editing.directions.EditDirections` (every method of this package
produces one). The arithmetic of linear edits is vectorfind's (:func:`vectorfind.directions.apply`:
float64 terms added in the order eyes, mouth, pose, one cast to float32), so VectorFind
directions edit here exactly as in stage 7.

* w-space sets (``w``, ``mapping_split1``, ``mapping_split2``): mid′ = mid + Σ α_p·s_p·v_p, then
  w′ = the rest of the mapping (:meth:`V9Generator.w_from_mid`; identity for ``w``). Layer-wise:
  synthesis layer l gets the w of the edit restricted to the properties whose layer range holds
  l; layers outside every range keep the unedited w exactly.
* ``style``: Δs = Σ α_p·s_p·v_p is added to the style coordinates of the synthesis layers (forward
  hooks on each layer's :class:`stylegan.layers.StyleAffine`; the plain synthesis path).
* ``label``: label′ = label + Σ α_p·s_p·e_p, then the generator as usual (the v3 reference).
* ``gradient``: per case, VectorFind's MLP gradient at the unedited mid vector.

``s_p`` is the set's α scale (``calibrated=True``, see :mod:`editing.calibrate`). ``conditional``
projects each linear direction orthogonal to the other controlled properties' directions.
Synthesis uses ψ = 1 and the stored noise (the semantics of ``image_from_mid``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stylegan_modified.conditional import check_label
from vectorfind.directions import apply
from vectorfind.protocols import CONTROLLED

from .directions import ALL, W_SPACES, EditDirections, project_out


@dataclass
class EditResult:
    images: torch.Tensor          # [N, 3, R, R] in [-1, 1]
    mid: torch.Tensor             # edited vectors of the set's space (w-space mid / styles / labels / gradient point)
    wp: torch.Tensor              # [N, num_layers, w_dim] fed to the synthesis


# ----------------------------------------------------------------------------- generator access

def _label(g, z, label):
    dim = g.spec.label_dim if hasattr(g, "spec") else 0
    return check_label(label, len(z), dim, z.device) if dim else None


def mid_of(g, z, label, space: str) -> torch.Tensor:
    """The unedited vectors of a w-space point (mapping only)."""
    if hasattr(g, "mid_vectors"):
        return g.mid_vectors(z, label, space)
    if space != "w":
        raise ValueError(f"{type(g).__name__} has no extraction point {space!r} (only w)")
    return g.mapping(z, _label(g, z, label))["w"]


def w_of(g, mid: torch.Tensor, space: str) -> torch.Tensor:
    return g.w_from_mid(mid, space) if hasattr(g, "w_from_mid") else mid


def style_layout(g) -> list[tuple[int, int, int]]:
    """(layer index, offset, width 2C) of each synthesis layer's style in the concatenated style vector."""
    out, off = [], 0
    for i in range(g.synthesis.num_layers):
        width = 2 * getattr(g.synthesis, f"layer{i}").style.channels
        out.append((i, off, width))
        off += width
    return out


def styles_of(g, w: torch.Tensor) -> torch.Tensor:
    """Concatenated style coordinates [N, Σ 2C] of w (ψ = 1: every layer reads the same w)."""
    return torch.cat([getattr(g.synthesis, f"layer{i}").style.style(w) for i, _, _ in style_layout(g)], dim=1)


def synthesize(g, wp: torch.Tensor, style_delta: torch.Tensor | None = None) -> torch.Tensor:
    """Images from wp [N, L, w_dim] with the stored noise; ``style_delta`` [N, Σ 2C] is added to the styles."""
    handles = []
    if style_delta is not None:
        for i, off, width in style_layout(g):
            handles.append(getattr(g.synthesis, f"layer{i}").style.register_forward_hook(
                _style_hook(style_delta[:, off:off + width])))
    try:
        return g.synthesis(g.truncation(wp), False, None)["image"]
    finally:
        for h in handles:
            h.remove()


def _style_hook(delta):
    def hook(module, inputs, output):
        x = inputs[0]
        style = output[1] + delta.to(output[1].dtype)
        s = style.view(-1, 2, module.channels, 1, 1)
        return x * (s[:, 0] + 1.0) + s[:, 1], style
    return hook


@torch.inference_mode()
def render(g, z, label) -> torch.Tensor:
    """The unedited images of (z, label) (ψ = 1, stored noise)."""
    z = torch.as_tensor(np.asarray(z), dtype=torch.float32)
    label = None if label is None else torch.as_tensor(np.asarray(label), dtype=torch.float32)
    return synthesize(g, g.truncation(w_of(g, mid_of(g, z, label, "w"), "w")))


# ----------------------------------------------------------------------------- the edit

def _groups(group, n: int) -> list[str]:
    if group is None:
        return [ALL] * n
    if isinstance(group, str):
        return [group] * n
    group = [str(x) for x in group]
    if len(group) != n:
        raise ValueError(f"{len(group)} group names for {n} cases")
    return group


def directions_for(ds: EditDirections, props, groups: list[str], conditional: bool) -> dict:
    """property -> [dim] (one group) or [N, dim] (per case) float64 directions."""
    out = {}
    for p in props:
        uniq = sorted(set(groups))
        vec = {g: ds.vector(p, g, conditional) for g in uniq}
        out[p] = vec[uniq[0]] if len(uniq) == 1 else np.stack([vec[g] for g in groups])
    return out


def _alphas(ds: EditDirections, alphas: dict, calibrated: bool) -> dict:
    unknown = [p for p in alphas if p not in CONTROLLED]
    if unknown:
        raise KeyError(f"unknown properties {unknown}; editable: {CONTROLLED}")
    missing = [p for p in alphas if p not in ds.properties]
    if missing:
        raise KeyError(f"{ds.method}: no direction for {missing} (has {ds.properties})")
    return {p: np.asarray(a, dtype=np.float64) * (ds.scales.get(p, 1.0) if calibrated else 1.0)
            for p, a in alphas.items()}


def _layer_ranges(ds: EditDirections, props, layers, num_layers: int) -> dict:
    out = {}
    for p in props:
        r = layers if layers is not None else ds.layers.get(p)
        if isinstance(r, dict):
            r = r.get(p)
        r = (0, num_layers) if r is None else (int(r[0]), int(r[1]))
        if not 0 <= r[0] < r[1] <= num_layers:
            raise ValueError(f"layer range {r} for {p} outside [0, {num_layers})")
        out[p] = r
    return out


@dataclass
class MidEdit:
    mids: np.ndarray              # edited float32 [N, dim]
    alphas: dict                  # property -> float64 α as applied (scaled when calibrated)
    directions: dict              # property -> float64 [dim] (one for all rows) or [N, dim]


def row_directions(ds: EditDirections, mid: np.ndarray, props, groups: list[str], conditional: bool,
                   dropout: bool = False, dropout_seed: int = 0) -> dict:
    """property -> [dim] or [N, dim] float64 directions at the unedited rows ``mid`` [N, dim].

    Stored vectors come from the row's group (:func:`directions_for`); a property the set edits by
    VectorFind's MLPs (``ds.nets``) takes the gradient at the row, once per distinct (row, group)
    (``dropout`` / ``dropout_seed`` as :meth:`vectorfind.gradient.GradientNets.directions`). A set may
    mix the two (VectorFind's ``mixed``: eyes by gradient, mouth and pose by the group's vector).
    ``conditional``: each direction minus its projection on the other properties' directions."""
    nets = ds.nets.nets if ds.nets is not None else {}
    want = [p for p in CONTROLLED if p in (ds.properties if conditional else props)]
    if not any(p in nets for p in want):
        return directions_for(ds, props, groups, conditional)
    cache, rows = {}, []
    for m, g in zip(mid, groups):
        key = (m.tobytes(), g)
        if key not in cache:
            from_nets = [p for p in want if p in nets]
            with torch.inference_mode(False):      # the MLP gradient needs autograd
                d = ds.nets.directions(m, from_nets, dropout, dropout_seed)
            d.update({p: ds.vector(p, g) for p in want if p not in nets})
            cache[key] = {p: project_out(d[p], [d[q] for q in want if q != p]) if conditional else d[p]
                          for p in props}
        rows.append(cache[key])
    return {p: np.stack([r[p] for r in rows]) for p in props}


def edit_mids(ds: EditDirections, mid, alphas: dict, *, group=None, conditional: bool = False,
              calibrated: bool = True, dropout: bool = False, dropout_seed: int = 0) -> MidEdit:
    """The edit of mid vectors, under :func:`edit` for every w-space and gradient set, and stage 7's
    case edit (:func:`editing.vectorfind_adapter.case_editor`): mid′ = mid + Σ α_p·s_p·v_p with
    vectorfind's float64 arithmetic (:func:`vectorfind.directions.apply`). ``mid`` float32 [N, dim];
    ``alphas`` property -> scalar or [N]; ``group`` None / a name / one per row."""
    m = np.asarray(mid)
    a = _alphas(ds, alphas, calibrated)
    props = [p for p in CONTROLLED if p in a]
    dirs = row_directions(ds, m, props, _groups(group, len(m)), conditional, dropout, dropout_seed)
    return MidEdit(apply(m, a, dirs), a, dirs)


@torch.inference_mode()
def edit(generator, z, label, alphas: dict, method: EditDirections, *, layers=None, conditional: bool = False,
         group=None, calibrated: bool = True, batch_size: int | None = None) -> EditResult:
    """Edit the cases (z [N, z_dim], label [N, L]) by ``alphas`` (property -> scalar or [N]).

    ``layers``: a range (start, stop) for every property, or property -> range; None uses the
    set's own ranges (all layers if it has none). ``group``: None / a group name / one per case.
    ``batch_size`` splits the work (results equal up to float rounding of batched convolutions)."""
    ds = method
    z = torch.as_tensor(np.asarray(z), dtype=torch.float32)
    label = torch.as_tensor(np.asarray(label), dtype=torch.float32) if label is not None else None
    n = len(z)
    if batch_size and n > batch_size:
        parts = [edit(generator, z[a:a + batch_size], None if label is None else label[a:a + batch_size],
                      {p: (a_ if np.ndim(a_) == 0 else np.asarray(a_)[a:a + batch_size]) for p, a_ in alphas.items()},
                      ds, layers=layers, conditional=conditional,
                      group=group if group is None or isinstance(group, str) else list(group)[a:a + batch_size],
                      calibrated=calibrated) for a in range(0, n, batch_size)]
        return EditResult(*(torch.cat([getattr(r, k) for r in parts]) for k in ("images", "mid", "wp")))
    a = _alphas(ds, alphas, calibrated)
    props = [p for p in CONTROLLED if p in a]
    if layers is not None and not is_w_space(ds):
        raise ValueError(f"layer-wise edits need a w-space set; {ds.method} edits in {ds.space!r}")
    g = generator
    num_layers = g.synthesis.num_layers

    if ds.space == "label":
        lab = label.clone()
        index = {p: i for i, p in enumerate(ds.meta["label_names"])}
        for p in props:
            lab[:, index[p]] = (lab[:, index[p]].double() + torch.from_numpy(np.broadcast_to(a[p], (n,)).copy())).float()
        wp = g.truncation(mid_of(g, z, lab, "w"))
        return EditResult(synthesize(g, wp), lab, wp)

    point = ds.nets.point if ds.space == "gradient" else ("w" if ds.space == "style" else ds.space)
    mid = mid_of(g, z, label, point)
    if ds.space == "style":
        w = w_of(g, mid, point)
        groups = _groups(group, n)
        dirs = directions_for(ds, props, groups, conditional)
        base = styles_of(g, w)
        edited = torch.as_tensor(apply(base.numpy(), a, dirs))
        wp = g.truncation(w)
        return EditResult(synthesize(g, wp, edited - base), edited, wp)

    em = edit_mids(ds, mid.numpy(), alphas, group=group, conditional=conditional, calibrated=calibrated)
    a, dirs, edited = em.alphas, em.directions, torch.as_tensor(em.mids)
    ranges = _layer_ranges(ds, props, layers, num_layers)
    w0 = w_of(g, mid, point)
    wp = g.truncation(w0).clone()
    by_subset: dict = {}
    for layer in range(num_layers):
        active = tuple(p for p in props if ranges[p][0] <= layer < ranges[p][1])
        by_subset.setdefault(active, []).append(layer)
    for active, idx in by_subset.items():
        if not active:
            continue                                   # these layers keep the unedited w
        sub = edited if len(active) == len(props) else torch.as_tensor(
            apply(mid.numpy(), {p: a[p] for p in active}, {p: dirs[p] for p in active}))
        wp[:, idx] = w_of(g, sub, point).unsqueeze(1)
    return EditResult(synthesize(g, wp), edited, wp)


def is_w_space(ds: EditDirections) -> bool:
    return ds.space in W_SPACES or ds.space == "gradient"
