"""The generation test on an ideal conditional generator: the renderer itself, with eyes / mouth / pose set by the label.

    python -m synthface.oracle_test                   # 30 z x 50 labels, both judges
    python -m synthface.oracle_test --n-z 10 --out /tmp/oracle

For each test latent z the oracle renders ``render(truth(z))`` with ``eyes_open``,
``mouth_open`` and ``pose`` replaced by the label's values (label units -> world units by a
least-squares line fitted on the kept set's labels and truths, clipped to the kept set's
range); every other parameter (hair, background, age, glasses, ...) is exactly z's. So the
person cannot change, and whatever the test measures beyond the controlled properties is the
judges' own cross-talk. This is the ceiling of the generation test in this world: no
fine-tuned generator can show less leak than the oracle shows through the same judges.

Writes ``<data root>/stage5/oracle/``: the generation test's files (``result_each_z.csv``,
``metrics.json``, ``report.md`` with the best z's grid) and ``fit.json`` (the label -> world
lines). Needs the kept set with the property CNN's labels and the property CNN
(``run_property_score_cnn.py``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pipeline.io import atomic_write_json
from pipeline.profiles import DEFAULT_PROFILE, load_profile

CONTROLLED = {"eyes": "eyes_open", "mouth": "mouth_open", "pose": "pose"}


class OracleGenerator:
    """``render(z, label)`` -> images in [-1, 1]: the world's render of z with the controlled
    parameters set from the label (see the module docstring)."""

    def __init__(self, world, label_names, fit: dict, resolution: int):
        self.world, self.label_names, self.fit, self.resolution = world, tuple(label_names), fit, int(resolution)
        self.z_dim = int(world.z_dim)

    @classmethod
    def fitted(cls, world, label_names, z_kept: np.ndarray, labels_kept: np.ndarray, resolution: int):
        t = world.truth(np.asarray(z_kept, np.float32))
        fit = {}
        for p, col in CONTROLLED.items():
            y = np.asarray(labels_kept[:, list(label_names).index(p)], np.float64)
            x = t[col].to_numpy(np.float64)
            a, b = np.polyfit(y, x, 1)
            fit[p] = {"column": col, "scale": float(a), "offset": float(b), "low": float(x.min()),
                      "high": float(x.max())}
        return cls(world, label_names, fit, resolution)

    def parameters(self, z, label):
        t = self.world.truth(np.asarray(torch.as_tensor(z).cpu(), np.float32)).copy()
        lab = np.asarray(torch.as_tensor(label).cpu(), np.float64)
        for p, f in self.fit.items():
            t[f["column"]] = np.clip(lab[:, self.label_names.index(p)] * f["scale"] + f["offset"], f["low"], f["high"])
        return t

    def render(self, z, label):
        from synthface.renderer import render_batch
        rgb, _ = render_batch(self.parameters(z, label), self.resolution)
        return torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def run_oracle_test(profile, out: Path | None = None, n_z: int = 30, progress: bool = True,
                    force: bool = False) -> dict:
    """Run the test (or return the finished one's metrics: ``fit.json`` is written last, so it marks
    a finished run of the same ``n_z``; ``force`` re-runs)."""
    import json
    from cnn.property_score_cnn import P7
    from stylegan_modified.generation_test import run_generation_test
    from stylegan_modified.stage5_cli import TEST_DEFAULTS
    from stylegan_modified.stage5_common import evaluator_calibration, make_judges, test_settings_from
    from stylegan_modified.stage5_data import (Stage5InputError, kept_latents, load_evaluator_for, load_kept_set,
                                               load_property_cnn_for, stage5_settings)
    from synthface.world import WorldMap
    if "world_seed" not in profile:
        raise Stage5InputError(f"profile {profile.name!r} has no synthetic world: the oracle needs one")
    root = profile.data_root
    out = Path(out) if out else root / "stage5" / "oracle"
    if not force and (out / "fit.json").is_file() and (out / "metrics.json").is_file():
        done = json.loads((out / "metrics.json").read_text())
        if done.get("n_z") == int(n_z):
            return done
    kept = load_kept_set(profile, root / "stage5/property_cnn/all_scores_v2_cnn.csv", P7, show_progress=False)
    world = WorldMap(z_dim=int(profile["generator"]["z_dim"]), seed=int(profile["world_seed"]))
    oracle = OracleGenerator.fitted(world, P7, kept_latents(profile, kept.img_nos), kept.labels,
                                    int(profile["resolution"]))
    ev = load_evaluator_for(profile)
    cal = evaluator_calibration(ev, kept.images, kept.labels, P7) if ev is not None else None
    cnn = load_property_cnn_for(profile, root / "stage5/property_cnn/property_score_cnn.pth")
    tcfg = {**stage5_settings(profile, "generation_test", dict(TEST_DEFAULTS)), "n_z": int(n_z)}
    with torch.inference_mode():
        m = run_generation_test(oracle, make_judges(cnn, ev, cal), out, test_settings_from(tcfg),
                                title="Oracle (the renderer with the label's eyes / mouth / pose)",
                                progress=progress)
    atomic_write_json(out / "fit.json", oracle.fit)
    return m


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=DEFAULT_PROFILE)
    ap.add_argument("--n-z", type=int, default=30)
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--force", action="store_true", help="re-run a finished test")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    if "world_seed" not in profile:
        print(f"profile {profile.name!r} has no synthetic world: no oracle to test")
        return
    m = run_oracle_test(profile, args.out, args.n_z, force=args.force)
    for name, j in m["judges"].items():
        leak = j["leak_mean_abs_r"]
        print(f"{name}: {j['passes']}/{m['n_z']} pass; mean r "
              + ", ".join(f"{p} {j['mean'][p + '_corr']:.3f}" for p in CONTROLLED)
              + f"; leak mean |r| max {max(leak.values()):.2f}")


if __name__ == "__main__":
    main()
