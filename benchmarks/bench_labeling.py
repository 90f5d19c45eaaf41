"""Milliseconds per label of the labelling tool's store and API, at the original's 2,000 images.

Times ``LabelStore.set_label`` (lock, sidecar read, sidecar + CSV atomic writes) and the same
through the HTTP API (FastAPI test client, no socket) with ``--labelled`` images already
labelled, so the files are their full size. Flat tiles as images: the pixels play no part.

    python benchmarks/bench_labeling.py                  # 2,000 images, 1,900 labelled, 200 labels
    python benchmarks/bench_labeling.py --images 8000 --labelled 7900

Check ``uptime`` first: on a 2-core machine a busy neighbour process distorts every figure.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.io import atomic_write_text  # noqa: E402
from web.labels import LabelStore  # noqa: E402
from web.label_format import stage2_label_format  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--labelled", type=int, default=1900)
    ap.add_argument("--labels", type=int, default=200, help="labels to time (4 per image)")
    args = ap.parse_args(argv)
    fmt = stage2_label_format()
    props = ("quality", "gender", "age", "glass")
    with tempfile.TemporaryDirectory() as tmp:
        files = {"quality_and_gender": Path(tmp) / "qg.csv", "age_and_glass": Path(tmp) / "ag.csv"}
        rows = range(args.labelled)
        atomic_write_text(files["quality_and_gender"], "img_name,quality,gender\n" + "".join(f"{n},1,1\n" for n in rows))
        atomic_write_text(files["age_and_glass"], "img_name,age,glass\n" + "".join(f"{n},0,0\n" for n in rows))
        store = LabelStore(files, fmt, range(args.images))
        todo = [(args.labelled + i // 4, props[i % 4]) for i in range(args.labels)]
        times = []
        for n, p in todo[: args.labels // 2]:
            t = time.perf_counter()
            store.set_label(n, p, 1)
            times.append(time.perf_counter() - t)
        from fastapi.testclient import TestClient   # here: only the API half of the benchmark needs it

        from web.app import create_app
        from web.labeling import labeling_router
        app = create_app({"/labeling": ("labels", labeling_router(store, Path(tmp)))})
        api = []
        with TestClient(app) as c:
            for n, p in todo[args.labels // 2:]:
                t = time.perf_counter()
                r = c.post("/api/labeling/label", json={"img_no": n, "prop": p, "value": 1})
                api.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
        ms, ams = 1e3 * np.array(times), 1e3 * np.array(api)
        print(f"{args.images} images, {args.labelled} labelled: store.set_label median {np.median(ms):.1f} ms "
              f"(p90 {np.percentile(ms, 90):.1f}); POST /api/labeling/label median {np.median(ams):.1f} ms "
              f"(p90 {np.percentile(ams, 90):.1f}); {len(ms) + len(ams)} labels")


if __name__ == "__main__":
    main()
