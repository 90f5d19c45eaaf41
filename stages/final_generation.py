"""Final generation (spec 04 §7): render a chosen (checkpoint, z) as the original did, and test it.

The original loaded ``stylegan_gen_fine_tuned_v3_ckpt_0005_gen.pth`` strictly, took the z of
``test_z_vector_0005.csv`` plus 19 copies with 0.3·N(0, I) added (unseeded), and rendered all
20 with one fixed label, (eyes 1.8, 0, 0, mouth 1.6, pose −1.2, 0, 0), to
``final_inference_test_v3/000000.jpg … 000019.jpg`` (000000 = the exact z). Here the noise is
seeded, images are PNG, and the generation test (30 z x 50 labels protocol, here on the exact z
and its 19 noised copies) reports the numbers of that choice.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.generation_report import mosaic_figure
from evaluation.generation import run_generation_test
from evaluation.generation import settings_from as test_settings_from
from evaluation.judges import calibration_cache, evaluator_calibration, make_judges
from evaluation.networks import load_evaluator_for, load_property_cnn_for
from pipeline.io import NUMBERED_PNG_RE, InputError, atomic_write_png, remove_unlisted
from pipeline.latents import read_z_csv
from pipeline import lineage
from pipeline.reports import markdown_table, write_report
from pipeline.runtime import apply_threads
from pipeline.vocabulary import CONTROLLED as P3
from pipeline.vocabulary import PROPERTIES as P7
from stylegan.generator import postprocess
from stylegan_modified.conditional import get_spec, synthesize
from stylegan_modified.loading import load_generator

from .bases import build_configs, kept_set_of
from .finetune_gan import CNN_LABELS, DEFAULT_LABELS, PROPERTY_CNN
from .settings import profile_of, resolve_stage

FINAL_LABEL = {"eyes": 1.8, "hair_color": 0.0, "hair_length": 0.0, "mouth": 1.6, "pose": -1.2,
               "background_mean": 0.0, "background_std": 0.0}


def noised_latents(z: np.ndarray, copies: int, scale: float, seed: int) -> np.ndarray:
    """[1 + copies, z_dim]: the exact z, then z + scale * N(0, I) per copy (seeded)."""
    rng = np.random.default_rng([int(seed), 41])
    noise = rng.standard_normal((int(copies), z.shape[-1])).astype(np.float32)
    return np.concatenate([z.reshape(1, -1), z.reshape(1, -1) + float(scale) * noise]).astype(np.float32)


def parse_label(text: str | None, names) -> np.ndarray:
    """``"eyes=1.8,mouth=1.6,pose=-1.2"`` (others 0) or 7 / 3 comma-separated numbers; None: the original's.
    A malformed text is a user error naming the flag."""
    try:
        return _parse_label(text, names)
    except ValueError as exc:
        raise InputError(f"flag --label {text!r}: {exc}") from exc


def _parse_label(text: str | None, names) -> np.ndarray:
    vals = dict(FINAL_LABEL)
    if text:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if all("=" in p for p in parts):
            vals = {n: 0.0 for n in P7}
            for p in parts:
                k, v = p.split("=", 1)
                if k.strip() not in P7:
                    raise ValueError(f"unknown label name {k.strip()!r}; expected names out of {', '.join(P7)}")
                vals[k.strip()] = float(v)
        else:
            nums = [float(p) for p in parts]
            if len(nums) != len(names):
                raise ValueError(f"--label needs {len(names)} numbers ({', '.join(names)}) or name=value pairs")
            vals = dict(zip(names, nums))
    return np.array([vals.get(n, 0.0) for n in names], dtype=np.float32)


RUN_HINTS = {"v1": "run_stylegan_fine_tuning_v1.py", "v4": "run_stylegan_fine_tuning_v1.py --v4",
             "v3": "run_stylegan_fine_tuning_v3.py"}


def run_records(root: Path, *paths: Path) -> dict:
    """Lineage records of the runs that made ``paths`` (a checkpoint, a z file): a file inside a stage
    folder of the data root (one with ``lineage.json``) needs that run complete and the file unchanged
    since it finished; a file elsewhere is recorded by its hash only (:func:`pipeline.lineage.open_stage`)."""
    root = Path(root).resolve()
    out = {}
    for path in paths:
        path = Path(path).resolve()
        for folder in path.parents:
            if folder == root or not folder.is_relative_to(root):
                break
            if (folder / lineage.LINEAGE).is_file():
                rel = folder.relative_to(root).as_posix()
                hint = RUN_HINTS.get(folder.name, f"the stage that writes {folder}")
                out[rel] = lineage.upstream(folder, folder.name, hint)
                lineage.verify(folder, hint, deep=True, only=[path.relative_to(folder).as_posix()])
                break
    return out


def run_final_generation(profile, version: str, checkpoint: Path, z_file: Path, z_index: int, out: Path,
                         label_text: str | None, copies: int, noise_scale: float, seed: int, test_cfg: dict,
                         property_cnn_path: Path, label_file: Path | None, evaluator: str | None = None,
                         device: str = "cpu") -> dict:
    t0 = time.perf_counter()
    runs = run_records(profile.data_root, checkpoint, z_file)     # the runs that made them: complete, unchanged
    gcfg, _ = build_configs(profile)
    spec = get_spec(version)
    g = load_generator(checkpoint, gcfg, version).to(device)
    zs = read_z_csv(z_file)
    if not 0 <= z_index < len(zs):
        raise InputError(f"--z-index {z_index} is out of range: {z_file} holds {len(zs)} latents")
    if zs.shape[1] != gcfg.z_dim:
        raise InputError(f"{z_file} holds {zs.shape[1]}-d latents; the generator takes {gcfg.z_dim}")
    z = noised_latents(zs[z_index], copies, noise_scale, seed)
    label = parse_label(label_text, spec.label_names)
    imgs = postprocess(synthesize(g, z, np.repeat(label[None], len(z), 0), batch_size=4))
    # inputs recorded; the completion mark of an earlier choice goes; its extra images too
    consumed = lineage.open_stage(out, files={"checkpoint": checkpoint, "z_file": z_file}, refuse_other_inputs=False)
    consumed.update(runs)
    if (out / "images").is_dir():
        remove_unlisted(out / "images", NUMBERED_PNG_RE, range(len(imgs)))
    for i, im in enumerate(imgs):
        atomic_write_png(out / "images" / f"{i:06d}.png", im)
    cells = [list(imgs[i:i + 10]) for i in range(0, len(imgs), 10)]
    mosaic_figure(cells, [f"{i:06d}-{min(i + 9, len(imgs) - 1):06d}" for i in range(0, len(imgs), 10)], None,
                  out / "final_images.png",
                  "label " + ", ".join(f"{n} {v:+g}" for n, v in zip(spec.label_names, label)))
    cnn = load_property_cnn_for(profile, property_cnn_path) if Path(property_cnn_path).is_file() else None
    ev = load_evaluator_for(profile, evaluator)
    calibration = None
    if ev is not None and label_file is not None and Path(label_file).is_file():
        kept = kept_set_of(profile, label_file, spec.label_names)
        calibration = evaluator_calibration(ev, kept.images, kept.labels, kept.label_names,
                                            cache_dir=calibration_cache(profile.data_root))
    judges = make_judges(cnn, ev, calibration)
    test = None
    if judges:
        test = run_generation_test(g, judges, out / "generation_test", test_settings_from(test_cfg), z=z,
                                   title=f"{version} checkpoint {Path(checkpoint).name}, z {z_index} of "
                                         f"{Path(z_file).name} and {copies} noised copies", progress=False)
    rows = []
    if test is not None:
        table = pd.read_csv(out / "generation_test" / "result_each_z.csv")
        for name in test["judges"]:
            pre = "" if name == test["primary_judge"] else f"{name}_"
            exact = table.iloc[0]
            rest = table.iloc[1:]
            rows.append({"judge": name, "exact_z": {f"{p}_{k}": float(exact[f"{pre}{p}_{k}"]) for p in P3
                                                    for k in ("corr", "mae")}
                         | {"passed": bool(exact[f"{pre}passed"])},
                         "noised_mean": {f"{p}_{k}": float(rest[f"{pre}{p}_{k}"].mean()) for p in P3
                                         for k in ("corr", "mae")} if len(rest) else None,
                         "noised_passes": int(rest[f"{pre}passed"].sum()) if len(rest) else 0})
    m = {"stage": "5_final_generation", "profile": profile.name, "version": version, "checkpoint": str(checkpoint),
         "z_file": str(z_file), "z_index": int(z_index), "label": dict(zip(spec.label_names, map(float, label))),
         "copies": int(copies), "noise_scale": float(noise_scale), "seed": int(seed),
         "images": [f"images/{i:06d}.png" for i in range(len(imgs))], "test": rows,
         "evaluator_calibration": calibration, "seconds": round(time.perf_counter() - t0, 1)}
    body = []
    for r in rows:
        e, nm = r["exact_z"], r["noised_mean"]
        body.append([r["judge"], "yes" if e["passed"] else "no"]
                    + [f"{e[f'{p}_corr']:.3f} / {e[f'{p}_mae']:.3f}" for p in P3]
                    + ([f"{nm[f'{p}_corr']:.3f}" for p in P3] + [f"{r['noised_passes']} / {copies}"] if nm else []))
    header = ["judge", "exact z passes"] + [f"{p} r / MAE" for p in P3] + \
        ([f"{p} r (noised, mean)" for p in P3] + ["noised passing"] if copies else [])
    write_report(out, f"Final generation ({version}, {profile.name})", [
        ("Images", f"z {z_index} of `{z_file}` (image 000000) and {copies} copies with {noise_scale} N(0, I) added "
                   f"(seed {seed}); one label for all.\n\n![final](final_images.png)"),
        ("Generation test of this choice (50 labels per latent)",
         markdown_table(header, body) if body else "No judge available.")])
    lineage.close_stage(out, consumed, m)                     # lineage.json, then metrics.json (last)
    return m


def main(profile_name: str, consts: dict, args=None, paths: dict | None = None) -> dict:
    """The stage from ``run_fine_tuned_generator.py``: settings = constants < profile ``stage5.final``
    < flags; default paths from the data root; prints the test of the choice."""
    profile = profile_of(profile_name)
    cfg = resolve_stage(consts, profile, "stage5.final", args)
    v, rt, paths = cfg.settings.values, cfg.runtime, dict(paths or {})
    apply_threads(int(rt.get("threads", 0)))
    root = profile.data_root
    version = v["version"]
    if version not in RUN_HINTS:
        raise InputError(f"flag --version {version!r}: expected one of {', '.join(RUN_HINTS)}")
    p = {"checkpoint": root / "stage5" / version / "generator.pth",
         "z_file": root / "stage5" / "v3" / "test_z_vector.csv", "out": root / "stage5" / "final",
         "property_cnn": root / PROPERTY_CNN, "labels": root / DEFAULT_LABELS.get(version, CNN_LABELS),
         **{k: Path(x) for k, x in paths.items() if x}}
    m = run_final_generation(profile, version, p["checkpoint"], p["z_file"], v["z_index"], p["out"],
                             v["label"] or None, v["copies"], v["noise_scale"], v["seed"], dict(cfg.test.values),
                             p["property_cnn"], p["labels"], paths.get("evaluator"), rt.get("device", "cpu"))
    for r in m["test"]:
        e = r["exact_z"]
        print(f"{r['judge']}: exact z {'passes' if e['passed'] else 'fails'}; r "
              + ", ".join(f"{q} {e[q + '_corr']:.3f}" for q in P3)
              + f"; noised copies passing {r['noised_passes']}/{m['copies']}")
    return m
