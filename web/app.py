"""The application factory and the server entry point.

Why FastAPI (on Starlette) served by uvicorn: both are maintained and widely used; request
bodies are declared as typed models and validated before our code runs; sync handlers run in a
thread pool, so a slow write never blocks other tabs; ``fastapi.testclient`` tests the API in
process without a socket; and each page is one more ``APIRouter`` passed to :func:`create_app`
(the face editor's factory, :func:`web.editor.editor_app`, lives with its router so that the
labelling server does not import the models).
"""
from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from pipeline.latents import read_latents

from .emulated import compare, emulated_labels  # compare: for run_labeling.py --check-emulated
from .labeling import STATIC, labeling_router
from .labels import LabelRequestError, LabelStateError, LabelStore
from .label_format import stage2_label_format

LOCALHOST = "127.0.0.1"


class RequestError(ValueError):
    """A bad request to a page's API: the reply is ``status`` (4xx) with ``str(exc)`` as its detail."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def create_app(pages: dict, title: str = "Oh-LoRA") -> FastAPI:
    """One app serving ``pages`` ({path: (name, APIRouter)}, e.g. ``{"/labeling": ("Hand labels", router)}``)."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    for _, (_, router) in pages.items():
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index():
        links = "".join(f'<li><a href="{html.escape(p)}">{html.escape(name)}</a></li>' for p, (name, _) in pages.items())
        return HTMLResponse(f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>"
                            f"<ul>{links}</ul>")

    @app.exception_handler(LabelRequestError)
    async def _request_error(request: Request, exc: LabelRequestError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestError)
    async def _page_error(request: Request, exc: RequestError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(LabelStateError)
    async def _state_error(request: Request, exc: LabelStateError):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                parts.append(f"request body is not valid JSON ({e.get('ctx', {}).get('error', 'decode error')})")
                continue
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "request body"
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    return app


def serve(app: FastAPI, host: str = LOCALHOST, port: int = 8000, log_level: str = "warning") -> None:
    """Run ``app`` with uvicorn until interrupted."""
    import uvicorn      # imported here: only the serving script needs the server, not the tests of the app

    if not 0 <= int(port) < 65536:
        raise ValueError(f"port {port} out of range")
    print(f"serving on http://{host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=int(port), log_level=log_level, access_log=False)


def stage1_images(stage1_dir) -> list[int]:
    """Image numbers of a finished stage 1 (its ``latents.csv``; the files are ``images/NNNNNN.png``)."""
    nos, _ = read_latents(Path(stage1_dir) / "latents.csv")
    return sorted(int(n) for n in nos)


def labeling_app(profile, stage1_dir=None, files: dict | None = None, groups=("quality_and_gender", "age_and_glass"),
                 count: int | None = 2000, import_files: bool = False, emulated: bool = True):
    """``(app, store, reference)`` of a labelling session on ``profile``'s stage-1 images.

    ``files``: {group: CSV path} overriding the profile's stage-2 label files (which are
    relative to the data root); ``count``: label the first ``count`` images (None: all);
    ``reference``: the emulated labeller's labels (None without a world or with ``emulated=False``).
    """
    fmt = stage2_label_format()
    stage1_dir = Path(stage1_dir) if stage1_dir else profile.stage_dir("stage1")
    bad = [g for g in groups if g not in fmt.groups]
    if bad or not groups:
        raise ValueError(f"unknown label group(s) {bad or '(none)'}; stage 2 reads {', '.join(fmt.groups)}")
    rel = {**fmt.default_files, **profile.get("stage2", {}).get("label_files", {})}
    paths = {g: Path((files or {}).get(g) or profile.data_root / rel[g]) for g in groups}
    images = stage1_images(stage1_dir)
    targets = images if count is None else images[:int(count)]
    store = LabelStore(paths, fmt, images, targets, import_files=import_files)
    reference = emulated_labels(profile, stage1_dir) if emulated else None
    router = labeling_router(store, stage1_dir / "images", reference, title=f"{profile.name}, writing " + " + ".join(p.name for p in paths.values()))
    app = create_app({"/labeling": ("Hand labels for stage 2", router)}, title=f"Oh-LoRA ({profile.name})")
    return app, store, reference

