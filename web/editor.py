"""The face editor's routes: the page, its choices, one edited image per slider position, and "save".

``GET  /editor``                  the page (web/static/editor.html)
``GET  /api/editor/config``       methods (per generator), z size, α range, layer count, judges
``POST /api/editor/render``       {method, seed | z, label?, alphas, layers?, conditional?, seq?} ->
                                  the image (PNG data URL) and its measured eyes / mouth / pose
``POST /api/editor/save``         the same body -> a new folder under the save root (see :func:`save_edit`)

Every image comes from :func:`editing.edit.edit` (through :mod:`web.editor_models`). Bad input — a
z of the wrong length, a number that is not finite, an unknown method, an α or a layer range out
of range — gets a 4xx with a ``detail`` message naming the field; it never reaches the models.

Save folder ``<save root>/NNNN/`` (written as ``.NNNN.tmp`` and renamed, so a folder is complete or
absent): ``image.png``; ``z.csv`` (one row, columns ``0 … d-1``: ``run_fine_tuned_generator.py
--z-file z.csv``); ``latent_codes_part1.csv`` / ``latent_codes_part2.csv`` (z and the generator's label
rounded to 4 dp, written as stage 7 writes them (:func:`vectorfind.files.latent_frames`): the rows its QA
re-test re-renders, with ``edit.json``'s group); ``directions/``
(the set, :meth:`EditDirections.save`); ``edit.json`` (method, generator, α and the α scale, layers,
conditional, group, labels, the measured values, and the ``run_fine_tuned_generator.py`` flags
that render a v3 label edit again).
"""
from __future__ import annotations

import base64
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel

from pipeline.io import atomic_write_json, atomic_write_text, encode_png
from pipeline.latents import write_z_csv
from stylegan.generator import postprocess
from vectorfind.files import latent_frames
from vectorfind.protocols import CONTROLLED

from .app import RequestError, create_app
from .app import serve  # noqa: F401  (run_editor.py imports its one web module, this one)
from .editor_models import EditorModels, Rendered
from .labeling import STATIC

ALPHA_MAX = 3.0
LABEL_MAX = 10.0
SEED_MAX = 2 ** 31 - 1


class EditorRequestError(RequestError):
    """A bad request: the page shows ``str(exc)``; the reply has ``status`` (4xx)."""


class EditBody(BaseModel):
    method: Any = None
    seed: Any = None
    z: Any = None
    label: Any = None
    alphas: Any = None
    layers: Any = None
    conditional: Any = False
    seq: Any = None


def _number(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise EditorRequestError(f"{what} is not a number ({json.dumps(x)[:40]})")
    try:
        v = float(x)
    except ValueError:
        raise EditorRequestError(f"{what} is not a number ({str(x)[:40]!r})") from None
    if not math.isfinite(v):
        raise EditorRequestError(f"{what} is not a finite number ({x!r})")
    return v


def parse_vector(value, size: int, what: str, limit: float | None = None) -> np.ndarray:
    """A list of numbers or a text of numbers (commas / spaces / brackets) of exactly ``size``."""
    if isinstance(value, str):
        parts = [p for p in value.replace("[", " ").replace("]", " ").replace(",", " ").split() if p]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise EditorRequestError(f"{what} must be a list of {size} numbers")
    if len(parts) != size:
        raise EditorRequestError(f"{what} has {len(parts)} numbers; the generator takes {size}")
    out = np.array([_number(p, f"{what}[{i}]") for i, p in enumerate(parts)], np.float64)
    if limit is not None and np.abs(out).max(initial=0) > limit:
        i = int(np.abs(out).argmax())
        raise EditorRequestError(f"{what}[{i}] = {out[i]:g} is outside [-{limit:g}, {limit:g}]")
    return out.astype(np.float32)


class EditRequest:
    """A validated body: the choice, z, base label, α per property, layer range, conditional."""

    def __init__(self, models: EditorModels, body: EditBody, alpha_max: float):
        if not isinstance(body.method, str) or body.method not in models.choices:
            raise EditorRequestError(f"unknown method {body.method!r}; choose one of {', '.join(models.choices)}")
        self.key = body.method
        c = models.choices[self.key]
        if body.z in (None, "") and body.seed in (None, ""):
            raise EditorRequestError("give a seed or paste a z")
        if body.z not in (None, ""):            # a pasted z wins over the seed
            self.z, self.seed = parse_vector(body.z, models.z_dim, "z"), None
        else:
            s = _number(body.seed, "seed")
            if s != int(s) or not 0 <= s <= SEED_MAX:
                raise EditorRequestError(f"seed {body.seed!r} must be a whole number in 0 … {SEED_MAX}")
            self.seed = int(s)
            self.z = models.z_of_seed(self.seed)
        g = models.generator(c.generator)
        self.label = None if body.label in (None, "") else parse_vector(body.label, g.spec.label_dim, "label",
                                                                        LABEL_MAX)
        alphas = body.alphas if body.alphas is not None else {}
        if not isinstance(alphas, dict):
            raise EditorRequestError("alphas must be an object {eyes, mouth, pose}")
        unknown = [k for k in alphas if k not in CONTROLLED]
        if unknown:
            raise EditorRequestError(f"unknown property {unknown[0]!r} in alphas; the sliders are {', '.join(CONTROLLED)}")
        self.alphas = {}
        for p, a in alphas.items():
            v = _number(a, f"alpha for {p}")
            if abs(v) > alpha_max:
                raise EditorRequestError(f"alpha for {p} = {v:g} is outside [-{alpha_max:g}, {alpha_max:g}]")
            self.alphas[p] = v
        self.layers = None
        if body.layers not in (None, "", []):
            if not isinstance(body.layers, (list, tuple)) or len(body.layers) != 2:
                raise EditorRequestError("layers must be [start, stop]")
            a, b = (_number(x, "layer range") for x in body.layers)
            n = models.num_layers
            if a != int(a) or b != int(b) or not 0 <= a < b <= n:
                raise EditorRequestError(f"layer range [{a:g}, {b:g}) is outside 0 … {n} (start < stop)")
            desc = models.choice(self.key).describe(n)
            if not desc["layers"]:
                raise EditorRequestError(f"{c.title} edits in {desc['space']!r} space: it has no layer range")
            self.layers = {p: (int(a), int(b)) for p in CONTROLLED}
        self.conditional = bool(body.conditional)

    def run(self, models: EditorModels) -> Rendered:
        try:
            return models.render(self.key, self.z, self.label, self.alphas, self.layers, self.conditional)
        except (KeyError, ValueError) as exc:      # an edit the set cannot make (e.g. no direction for a group)
            raise EditorRequestError(f"{models.choices[self.key].title}: {exc}") from exc


def image_payload(r: Rendered) -> tuple[np.ndarray, str]:
    rgb = postprocess(r.images)[0]
    return rgb, "data:image/png;base64," + base64.b64encode(encode_png(rgb)).decode("ascii")


def save_edit(root: Path, models: EditorModels, req: EditRequest, r: Rendered, rgb: np.ndarray) -> Path:
    """Write one saved edit (module docstring) and return its folder."""
    root.mkdir(parents=True, exist_ok=True)
    c = models.choices[req.key]
    g = models.generator(c.generator)
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()]
    n = max(taken, default=-1) + 1
    while True:
        tmp = root / f".{n:04d}.tmp"
        try:
            tmp.mkdir()
            break
        except FileExistsError:
            n += 1
    (tmp / "image.png").write_bytes(encode_png(rgb))
    write_z_csv(tmp / "z.csv", r.z[None])
    for name, frame in latent_frames(r.z[None], r.label[None]).items():
        if name != "latent_codes_all":
            atomic_write_text(tmp / f"{name}.csv", frame.to_csv(index=False, lineterminator="\n"))
    c.ds.save(tmp / "directions")
    names = list(g.spec.label_names)
    label_text = ",".join(f"{k}={float(v):.9g}" for k, v in zip(names, r.label))
    rec = {"method": req.key, "title": c.title, "direction_source": c.source, "space": c.ds.space,
           "generator": c.generator, "generator_source": models.generator_source(c.generator),
           "seed": req.seed, "z_file": "z.csv", "z_seed_rule": "seed n = stage-1 image n (latent_z, stage-1 seed 0)",
           "alphas": req.alphas, "alpha_scales": {p: float(c.ds.scales.get(p, 1.0)) for p in req.alphas},
           "layers": {p: list(v) for p, v in req.layers.items()} if req.layers else None,
           "conditional": req.conditional, "group": r.group, "label_names": names,
           "base_label": [float(x) for x in r.base_label], "label": [float(x) for x in r.label],
           "measured": r.measured, "truth_judge": models.truth, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if c.ds.space == "label":
        rec["run_fine_tuned_generator"] = ["--version", "v3", "--z-file", str(root / f"{n:04d}" / "z.csv"),
                                           "--z-index", "0", "--label", label_text]
    atomic_write_json(tmp / "edit.json", rec)
    final = root / f"{n:04d}"
    os.rename(tmp, final)
    return final


def editor_router(models: EditorModels, save_root: str | Path, alpha_max: float = ALPHA_MAX, title: str = "") -> APIRouter:
    save_root = Path(save_root)
    router = APIRouter()

    @router.get("/editor", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "editor.html", headers={"Cache-Control": "no-store"})

    @router.get("/api/editor/config")
    def config():
        n = models.num_layers
        return {"title": title, "z_dim": models.z_dim, "alpha_max": alpha_max, "num_layers": n,
                "properties": list(CONTROLLED), "judges": list(models.judges), "truth": models.truth,
                "judge_notes": models.judge_notes, "notes": models.notes, "save_root": str(save_root),
                "methods": [c.describe(n) for c in models.choices.values()]}

    @router.get("/api/editor/method/{key:path}")
    def method(key: str):
        if key not in models.choices:
            raise EditorRequestError(f"unknown method {key!r}; choose one of {', '.join(models.choices)}", 404)
        return models.choice(key).describe(models.num_layers)

    @router.post("/api/editor/render")
    def render_one(body: EditBody):
        t0 = time.perf_counter()
        req = EditRequest(models, body, alpha_max)
        r = req.run(models)
        t1 = time.perf_counter()
        _, url = image_payload(r)
        ms = {**r.ms, "encode": 1000 * (time.perf_counter() - t1), "total": 1000 * (time.perf_counter() - t0)}
        return {"seq": body.seq, "image": url, "measured": r.measured, "group": r.group, "ms": ms,
                "seed": req.seed, "label": [float(x) for x in r.label]}

    @router.post("/api/editor/save")
    def save(body: EditBody):
        req = EditRequest(models, body, alpha_max)
        r = req.run(models)
        rgb, _ = image_payload(r)
        folder = save_edit(save_root, models, req, r, rgb)
        return {"folder": str(folder), "files": sorted(p.name for p in folder.iterdir())}

    return router


def editor_app(profile, save_root=None, *, v9_source: str = "stage6/v9/generator.pth", board_dir=None,
               stage7_dir=None, judges=("evaluator", "property_cnn"), alpha_max: float = ALPHA_MAX,
               sefa_pick: int = 64, preload=("v3", "v9")):
    """``(app, models)`` of the face editor on ``profile`` (saves under ``save_root``, default
    ``<data root>/editor``). ``preload``: generators loaded now rather than at the first request."""
    models = EditorModels(profile, v9_source=v9_source, board_dir=board_dir, stage7_dir=stage7_dir, judges=judges,
                          sefa_pick=sefa_pick)
    for which in preload:
        if any(c.generator == which for c in models.choices.values()):
            models.generator(which)
    root = Path(save_root) if save_root else profile.data_root / "editor"
    router = editor_router(models, root, alpha_max, title=f"{profile.name}, saving to {root}")
    app = create_app({"/editor": ("Face editor", router)}, title=f"Oh-LoRA ({profile.name})")
    return app, models
