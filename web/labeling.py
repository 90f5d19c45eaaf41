"""The labelling page's routes: the page itself, stage-1 images and the label API.

``GET  /labeling``                       the page (web/static/labeling.html)
``GET  /api/labeling/config``            properties, keys, progress, files, whether replay is available
``GET  /api/labeling/resume``            the image to start at (where the last session stopped)
``GET  /api/labeling/images/{n}``        one image's labels and neighbours
``GET  /api/labeling/png/{n}``           the stage-1 image file
``GET  /api/labeling/emulated/{n}``      the emulated labeller's labels (synthface only)
``POST /api/labeling/label``             {img_no, prop, value}: set one label (written before the reply)
``POST /api/labeling/undo``              {img_no?}: clear an image's labels (default: the last finished)
``POST /api/labeling/skip``              {img_no}: leave it for later, reply with the next image
``POST /api/labeling/goto``              {img_no}: jump (the position to resume at)

Bad requests get a 4xx with a ``detail`` message naming what is wrong.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel

from .labels import LABEL_KEYS, LabelRequestError, LabelStore

STATIC = Path(__file__).resolve().parent / "static"


class LabelBody(BaseModel):
    img_no: Any
    prop: str
    value: Any


class ImageBody(BaseModel):
    img_no: Any = None


def labeling_router(store: LabelStore, image_dir: str | Path, emulated: pd.DataFrame | None = None,
                    title: str = "") -> APIRouter:
    image_dir = Path(image_dir)
    router = APIRouter()
    replay = None
    if emulated is not None:
        replay = {int(r["img_name"]): {p: int(r[p]) for p in store.properties}
                  for r in emulated.to_dict("records")}

    @router.get("/labeling", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "labeling.html", headers={"Cache-Control": "no-store"})

    @router.get("/api/labeling/config")
    def config():
        return {"title": title, "properties": list(store.properties),
                "keys": {p: [{"value": v, "key": k, "meaning": m} for v, k, m in LABEL_KEYS[p]]
                         for p in store.properties},
                "files": {g: str(p) for g, p in store.files.items()}, "sidecar": str(store.sidecar),
                "progress": store.progress(), "emulated": replay is not None}

    @router.get("/api/labeling/resume")
    def resume():
        view = store.resume()
        if view is None:
            raise LabelRequestError("this session has no images to label", status=404)
        return view

    @router.get("/api/labeling/images/{img_no}")
    def image_view(img_no: str):
        return store.view(_int(img_no))

    @router.get("/api/labeling/png/{img_no}")
    def image_file(img_no: str):
        n = store.view(_int(img_no))["img_no"]
        path = image_dir / f"{n:06d}.png"
        if not path.is_file():
            raise LabelRequestError(f"image file {path} is missing (stage 1 lists image {n})", status=404)
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @router.get("/api/labeling/emulated/{img_no}")
    def emulated_view(img_no: str):
        if replay is None:
            raise LabelRequestError("no emulated labeller on this profile (only profiles with a world have one)",
                                    status=404)
        n = store.view(_int(img_no))["img_no"]
        if n not in replay:
            raise LabelRequestError(f"the emulated labeller does not label image {n} (it labels "
                                    f"{len(replay)} images)", status=404)
        return {"img_no": n, "labels": replay[n]}

    @router.post("/api/labeling/label")
    def label(body: LabelBody):
        return store.set_label(body.img_no, body.prop, body.value)

    @router.post("/api/labeling/undo")
    def undo(body: ImageBody):
        view = store.clear(body.img_no)
        if view is None:
            raise LabelRequestError("nothing to undo: no image is labelled", status=409)
        return view

    @router.post("/api/labeling/skip")
    def skip(body: ImageBody):
        return store.skip(_required(body.img_no))

    @router.post("/api/labeling/goto")
    def goto(body: ImageBody):
        return store.goto(_required(body.img_no))

    return router


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LabelRequestError(f"image number {text!r} is not an integer") from None


def _required(img_no):
    if img_no is None:
        raise LabelRequestError("img_no is missing")
    return img_no
