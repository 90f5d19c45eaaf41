"""Sampling (stage 1, run_original_generator.py): N images and their latents from the profile's
original generator.

Work is split into fixed chunks of ``batch_size`` consecutive image numbers; a
chunk's images depend only on the seed, the settings and the chunk's latents,
so skipping finished chunks (resume) and splitting chunks over processes
(``--shard i/n``) give the same files as one uninterrupted run.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline import lineage
from pipeline.config import ConfigError, Resolved, resolve
from pipeline.io import (atomic_write_csv, encode_png, png_intact, read_png_rgb, remove_stale_tmp, sha256_file,
                         write_if_different)
from pipeline.reports import contact_sheet_figure, markdown_table, write_report
from pipeline.profiles import Profile, load_profile
from pipeline.runtime import Shard, apply_threads, check_run_manifest, peak_rss_mb
from stylegan.generator import postprocess
from stylegan.generator import InferencePlan
from stylegan.sampling import DETERMINISTIC, build_generator, generate, inference_signature, latent_z, mixing_plan, stage_plan
from synthface.hand_labels import write_labels_for_stage1

IMAGE_DIR = "images"
LATENTS_CSV = "latents.csv"


@dataclass
class SamplingSettings:
    num_images: int = 10_000
    batch_size: int = 16
    seed: int = 0
    trunc_psi: float = 1.0
    trunc_layers: int = 0
    style_mixing_prob: float = 0.0
    randomize_noise: bool = False

    def validate(self) -> None:
        if self.num_images < 1:
            raise ConfigError(f"NUM_IMAGES must be >= 1, got {self.num_images}")
        if self.batch_size < 1:
            raise ConfigError(f"BATCH_SIZE must be >= 1, got {self.batch_size}")
        if not 0 <= self.seed < 2 ** 32:
            raise ConfigError(f"SEED must be in 0 … 4294967295, got {self.seed}")
        if not 0.0 <= self.style_mixing_prob <= 1.0:
            raise ConfigError(f"STYLE_MIXING_PROB must be in [0, 1], got {self.style_mixing_prob}")
        if not 0.0 <= self.trunc_psi <= 1.0:
            raise ConfigError(f"TRUNC_PSI must be in [0, 1], got {self.trunc_psi}")


def image_name(n: int) -> str:
    return f"{n:06d}.png"


def _chunk_done(image_dir: Path, idx: range, known: dict | None = None) -> bool:
    """Every image of the chunk is there and intact: its size and hash as recorded when the folder last
    finished (``known``: ``{name: [size, sha256]}``), or else a complete PNG (every chunk's CRC)."""
    for n in idx:
        p = image_dir / image_name(n)
        if not p.is_file():
            return False
        rec = (known or {}).get(f"{IMAGE_DIR}/{image_name(n)}")
        if rec is not None and p.stat().st_size == rec[0] and sha256_file(p) == rec[1]:
            continue
        if not png_intact(p):
            return False
    return True


def _finished_outputs(out_dir: Path) -> dict:
    """``{relative path: [size, sha256]}`` recorded when the folder last finished (empty if never)."""
    try:
        rec = json.loads((out_dir / lineage.LINEAGE).read_text())
    except (OSError, ValueError):
        return {}
    return rec.get("outputs", {}) if isinstance(rec, dict) else {}


def folder_path(path: str, out_dir: Path) -> str:
    """The ``inference_path`` setting for ``out_dir``: ``"auto"`` is the path the folder was started
    with (its ``run_config.json``), ``"exact"`` for images without a record (made before "auto"
    existed), and for a new folder ``"relaxed"`` (the fast path, within one grey level of exact);
    other values as given. So a finished or half-made folder never changes path by default."""
    if path != "auto":
        return path
    try:
        rec = json.loads((Path(out_dir) / "run_config.json").read_text())
    except FileNotFoundError:
        image_dir = Path(out_dir) / IMAGE_DIR
        return "exact" if image_dir.is_dir() and any(image_dir.glob("*.png")) else "relaxed"
    except (OSError, ValueError):
        return "exact"         # unreadable: check_run_manifest names the problem
    inference = rec.get("inference") if isinstance(rec, dict) else None
    return str(inference.get("path", "exact")) if isinstance(inference, dict) else "exact"


def settings_from(cfg: Resolved) -> SamplingSettings:
    return SamplingSettings(**{k: cfg[k] for k in SamplingSettings.__dataclass_fields__})


def main(consts: dict, profile_name: str, flags, out: str | None = None, shard: str | None = None,
         show_progress: bool = True) -> dict:
    """The script's entry: constants, then the profile's ``stage1`` preset, then flags; then run."""
    profile = load_profile(profile_name)
    cfg = resolve(consts, profile, "stage1", flags)            # every flag checked before anything is written
    shard_ = Shard.parse(shard)
    out_dir = Path(out) if out else profile.stage_dir("stage1")
    try:
        plan = stage_plan(folder_path(str(cfg["inference_path"]), out_dir))    # "exact" or "relaxed"
    except ValueError as exc:
        raise ConfigError(f"INFERENCE_PATH: {exc}") from exc
    apply_threads(int(cfg["threads"]))
    result = run_sampling(profile, settings_from(cfg), out_dir=out_dir, shard=shard_,
                          show_progress=show_progress, sources=cfg.sources, plan=plan)
    if result.get("hand_labels"):
        print(f"emulated hand labels: {result['hand_labels']['count']} images, "
              f"{result['hand_labels']['noise_rate']:.1%} label noise")
    run = result.get("last_run", result)
    state = "complete" if result.get("complete") else "partial (other shards pending)"
    print(f"stage 1 {state}: generated {run['generated_this_run']}, skipped {run['skipped_existing']}, "
          f"{run['images_per_s']} images/s, peak RSS {run['peak_rss_mb']} MiB")
    return result


def run_sampling(profile: Profile, settings: SamplingSettings, out_dir: Path | None = None, shard: Shard = Shard(),
                 show_progress: bool = True, sources: dict | None = None,
                 plan: InferencePlan = DETERMINISTIC) -> dict:
    """``plan``: the generator's inference plan, batch-size independent (micro_batch > 0):
    :data:`DETERMINISTIC` (exact path) or ``FAST`` (relaxed path, within 1e-4 of it); part of the
    folder's recorded settings (``inference``), so a folder is never finished under another."""
    settings.validate()
    if plan.micro_batch < 1:
        raise ValueError("stage 1 needs a batch-size independent plan (micro_batch >= 1)")
    out_dir = Path(out_dir) if out_dir else profile.stage_dir("stage1")
    image_dir = out_dir / IMAGE_DIR
    g = build_generator(profile)
    cfg = g.cfg
    ckpt = profile.get("generator_checkpoint")
    # the thread count is part of the folder's settings (check_run_manifest records it): 1 and 2
    # threads differ by one grey level in a few images (measured on synthface)
    check_run_manifest(out_dir / "run_config.json", {
        "profile": profile.name, "generator": cfg.to_dict(), "generator_checkpoint": ckpt,
        "generator_checkpoint_sha256": sha256_file(profile.path(ckpt)) if ckpt else None,
        "random_init_seed": profile.get("random_init_seed"), **asdict(settings),
        "inference": inference_signature(plan)},
        sources={k: v for k, v in (sources or {}).items() if v != "constant"})
    known = _finished_outputs(out_dir)
    consumed = lineage.open_stage(out_dir, restart_hint="use another --out folder or delete it to start over")
    image_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(image_dir)
    remove_stale_tmp(out_dir)

    n_chunks = -(-settings.num_images // settings.batch_size)
    mine = [c for c in range(n_chunks) if shard.owns(c)]
    t0 = time.perf_counter()
    generated = skipped = 0
    gen_seconds = 0.0
    for c in tqdm(mine, desc=f"stage 1 [{profile.name}] shard {shard}", unit="batch", disable=not show_progress):
        idx = range(c * settings.batch_size, min((c + 1) * settings.batch_size, settings.num_images))
        if _chunk_done(image_dir, idx, known):
            skipped += len(idx)
            continue
        t = time.perf_counter()
        images = _render_chunk(g, idx, settings, cfg, plan)
        gen_seconds += time.perf_counter() - t
        for n, img in zip(idx, images):      # a file that differs (broken, older) is replaced
            if write_if_different(image_dir / image_name(n), encode_png(img)):
                generated += 1
            else:
                skipped += 1
    elapsed = time.perf_counter() - t0
    run = {"shard": str(shard), "generated_this_run": generated, "skipped_existing": skipped,
           "seconds": round(elapsed, 3), "generation_seconds": round(gen_seconds, 3),
           "images_per_s": round(generated / gen_seconds, 3) if gen_seconds > 0 else None,
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    if all((image_dir / image_name(n)).is_file() for n in range(settings.num_images)):
        return finalise_sampling(profile, settings, out_dir, cfg, run, consumed)
    return {"complete": False, **run}


@torch.inference_mode()
def _render_chunk(g, idx: range, settings: SamplingSettings, cfg, plan: InferencePlan = DETERMINISTIC) -> np.ndarray:
    z = latent_z(idx, cfg.z_dim, settings.seed)
    z2 = cutoff = None
    if settings.style_mixing_prob > 0:
        z2, cutoff = mixing_plan(idx, cfg.z_dim, settings.seed, settings.style_mixing_prob, cfg.num_layers)
    img = generate(g, z, trunc_psi=settings.trunc_psi, trunc_layers=settings.trunc_layers, z2=z2, cutoff=cutoff,
                   randomize_noise=settings.randomize_noise, noise_seed=settings.seed, noise_ids=idx,
                   plan=plan)     # fixed micro-batches, per-image noise: the batch size does not matter
    return postprocess(img)


def latents_frame(settings: SamplingSettings, z_dim: int, num_layers: int) -> pd.DataFrame:
    idx = range(settings.num_images)
    z = latent_z(idx, z_dim, settings.seed)
    cols = {"img_no": np.arange(settings.num_images), "img_name": [image_name(n) for n in idx]}
    df = pd.concat([pd.DataFrame(cols), pd.DataFrame(z, columns=[f"z_{i}" for i in range(z_dim)])], axis=1)
    if settings.style_mixing_prob > 0:
        z2, cutoff = mixing_plan(idx, z_dim, settings.seed, settings.style_mixing_prob, num_layers)
        df["mix_cutoff"] = cutoff
        df = pd.concat([df, pd.DataFrame(z2, columns=[f"z2_{i}" for i in range(z_dim)])], axis=1)
    return df


def finalise_sampling(profile, settings: SamplingSettings, out_dir: Path, cfg, run: dict,
                      consumed: dict | None = None) -> dict:
    df = latents_frame(settings, cfg.z_dim, cfg.num_layers)
    atomic_write_csv(out_dir / LATENTS_CSV, df)
    n_show = min(32, settings.num_images)
    thumbs = [read_png_rgb(out_dir / IMAGE_DIR / image_name(n)) for n in range(n_show)]
    sheet = contact_sheet_figure(thumbs, [f"{n:06d}" for n in range(n_show)], out_dir / "report" / "contact_sheet.png",
                                 suptitle=f"{profile.name}: first {n_show} samples (seed {settings.seed})")
    metrics = {
        "stage": "1_original_generator", "profile": profile.name, "complete": True,
        "count": settings.num_images, "settings": asdict(settings), "generator": cfg.to_dict(),
        "generator_checkpoint": profile.get("generator_checkpoint"),
        "random_init_seed": profile.get("random_init_seed"),
        "mixed_images": int((df["mix_cutoff"] >= 0).sum()) if "mix_cutoff" in df else 0,
        "outputs": {"images": f"{IMAGE_DIR}/{{n:06d}}.png", "latents": LATENTS_CSV},
        "last_run": run, "threads": torch.get_num_threads(),
    }
    if "hand_labels" in profile:
        hl = profile["hand_labels"]
        metrics["hand_labels"] = write_labels_for_stage1(out_dir, int(profile["world_seed"]), int(hl["count"]),
                                                         float(hl["noise_rate"]), int(hl["seed"]))
    origin = (f"checkpoint `{profile.get('generator_checkpoint')}`" if profile.get("generator_checkpoint")
              else f"fixed-seed random initialisation (seed {profile.get('random_init_seed')}); "
                   "no trained weights are configured for this profile yet")
    write_report(out_dir, f"Stage 1 — original generator samples ({profile.name})", [
        ("Summary", markdown_table(["item", "value"], [
            ["images", settings.num_images], ["resolution", cfg.resolution], ["z dim", cfg.z_dim],
            ["seed", settings.seed], ["batch size", settings.batch_size],
            ["truncation", f"psi {settings.trunc_psi}, layers {settings.trunc_layers}"],
            ["style mixing prob", settings.style_mixing_prob], ["randomised noise", settings.randomize_noise],
            ["generator", origin],
            ["images/s (last run)", run["images_per_s"]], ["peak RSS MiB (last run)", run["peak_rss_mb"]],
        ])),
        ("Contact sheet", f"![contact sheet](report/{sheet.name})"),
        ("Files", f"- `{IMAGE_DIR}/NNNNNN.png`: the images (RGB PNG)\n"
                  f"- `{LATENTS_CSV}`: `img_no, img_name, z_0 … z_{cfg.z_dim - 1}`"
                  + (", `mix_cutoff`, `z2_*`" if settings.style_mixing_prob > 0 else "")),
    ])
    lineage.close_stage(out_dir, consumed or {}, metrics)      # lineage.json, then metrics.json (last)
    return metrics
