"""Stage 5 end to end on the tests' tiny synthetic world, with whichever code layout is on the path:
train + pack (root A), then install the packed runs into a fresh root (B) and test; for
``compare_stage5.py`` between two checkouts (before / after a restructuring).

    cd <checkout> && python benchmarks/stage5_tiny_world.py /tmp/out     # writes /tmp/out/{a,b}/runs/s5tiny/stage5

Works with the layout before the stage-5 restructuring (cnn.stage5_property, stylegan_modified.stage5_*)
and after it (stages.*), so the same driver measures both.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.getcwd())            # the checkout under test, not this file's

import torch  # noqa: E402  (after the thread variable)

from tests.stage5_world import make_root  # noqa: E402

try:                                        # after the restructuring
    from stages.finetune_gan import run_gan_stage
    from stages.finetune_v3 import run_v3_stage
    from stages.final_generation import run_final_generation
    from stages.oracle import run_oracle
    from stages.property_cnn import run_property_stage
    from stages.settings import TEST_DEFAULTS
    from stages.settings import profile_section as section
    from stages.shipping import pack_gan_run, pack_property_run, pack_v3_run
    from training.cvae import V3Settings
    from training.gan import GanSettings
    LAYOUT = "stages"
except ImportError:                         # before it
    from cnn.stage5_property import pack_property_run, run_property_stage
    from stylegan_modified.final_generation import run_final_generation
    from stylegan_modified.finetune_gan import GanSettings
    from stylegan_modified.finetune_v3 import V3Settings
    from stylegan_modified.stage5_cli import TEST_DEFAULTS
    from stylegan_modified.stage5_data import stage5_settings as section
    from stylegan_modified.stage5_gan import pack_gan_run, run_gan_stage
    from stylegan_modified.stage5_v3 import pack_v3_run, run_v3_stage
    from synthface.oracle_test import run_oracle
    LAYOUT = "stylegan_modified"


def settings(cls, prof, block, **kw):
    d = {f.name: f.default for f in dataclasses.fields(cls)}
    return cls(**{**section(prof, block, d), **kw})


def run_all(prof, pack: bool) -> None:
    test = section(prof, "generation_test", dict(TEST_DEFAULTS))
    run_property_stage(prof, show_progress=False)
    if LAYOUT == "stages":
        run_oracle(prof, dict(test), progress=False)
    else:
        run_oracle(prof, n_z=int(test["n_z"]), progress=False)
    run_gan_stage(prof, settings(GanSettings, prof, "v1", version="v1"), dict(test), female_n=6, show_progress=False)
    run_v3_stage(prof, settings(V3Settings, prof, "v3"), dict(test), female_n=6, show_progress=False)
    root = prof.data_root / "stage5"
    run_final_generation(prof, "v3", root / "v3" / "generator.pth", root / "v3" / "test_z_vector.csv", 0,
                         root / "final", None, 3, 0.3, 0, dict(test), root / "property_cnn" / "property_score_cnn.pth",
                         root / "property_cnn" / "all_scores_v2_cnn.csv")
    if pack:
        for fn in (lambda: pack_property_run(prof), lambda: pack_gan_run(prof, "v1"), lambda: pack_v3_run(prof)):
            fn()


def main(out: str) -> None:
    torch.set_num_threads(1)
    out = Path(out)
    a = make_root(out / "a")
    a["stage5"]["shipped"] = str(out / "shipped")
    run_all(a, pack=True)
    b = make_root(out / "b")
    b["stage5"]["shipped"] = str(out / "shipped")
    run_all(b, pack=False)
    installed = {r: (b.data_root / "stage5" / r / "installed_from_shipped.json").is_file()
                 for r in ("property_cnn", "v1", "v3")}
    print(json.dumps({"layout": LAYOUT, "a": str(a.data_root), "b": str(b.data_root), "installed_in_b": installed}))


if __name__ == "__main__":
    main(sys.argv[1])
