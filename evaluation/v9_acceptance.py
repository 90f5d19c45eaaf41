"""FineTune-v9 acceptance figures (issue 17): concept shares, spread, Fréchet distance, branch use.

For ``n`` random (z ~ N(0, I), label ~ N(0, I)) pairs (one seeded draw shared by the three
generators), the base G (unconditional: z only), FineTune-v1 and FineTune-v9 render images
(stored noise, ψ = 1) that are judged by

* the independent synthface evaluator: the share of female / good quality / young / no glasses
  outputs (probability ≥ 0.5 resp. < 0.5), all four together, the std of each continuous
  property (compared with its std over the kept set: ratio ≥ 0.8 means no collapse), and the
  Fréchet distance between its penultimate features (the 256 units before the last dense layer)
  of the outputs and of the kept set;
* the stage-2 fold models (mean of the folds per image, in memory, no JPEG): the mean gender /
  quality / age / glass score, beside the evaluator's shares.

The new branch's use (:func:`stylegan_modified.v9.branch_stats`) is measured on the same (z, label).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from pipeline.checkpoint import load_state_dict_strict
from pipeline.vocabulary import FILTER_PROPERTIES
from stylegan.generator import GeneratorConfig, StyleGANGenerator, postprocess
from stylegan.sampling import generate_uint8
from stylegan_modified.conditional import synthesize
from stylegan_modified.v9 import branch_stats
from stylegan.generator import to_signed_tensor

CONCEPTS = {"female": ("female", True), "good_quality": ("quality_defect", False), "young": ("old", False),
            "no_glasses": ("glasses", False)}
STD_RATIO_MIN = 0.8


@torch.inference_mode()
def evaluator_outputs(ev, images_nhwc: np.ndarray, batch_size: int = 100) -> tuple[dict, np.ndarray]:
    """(the evaluator's predictions, its penultimate features [N, 256]) for uint8 NHWC images."""
    pred = ev.predict(images_nhwc, batch_size=batch_size)
    feats = []
    head = ev.net.head[:-1]
    for a in range(0, len(images_nhwc), batch_size):
        x = to_signed_tensor(images_nhwc[a:a + batch_size])
        if x.shape[-1] != 128:
            x = torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False,
                                                antialias=True)
        feats.append(head(ev.net.features(x)).numpy().astype(np.float64))
    return pred, np.concatenate(feats)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b``."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2.0 * np.real(covmean)))


@torch.inference_mode()
def cnn_means(cnns: dict, images_nhwc: np.ndarray, batch_size: int = 100) -> dict:
    """Mean stage-2 score per filter property (fold mean per image, eval mode, [0, 1] input)."""
    out = {}
    for prop in FILTER_PROPERTIES:
        vals = []
        for a in range(0, len(images_nhwc), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images_nhwc[a:a + batch_size])).permute(0, 3, 1, 2).float() / 255
            vals.append(np.mean([m.eval()(x).reshape(-1).double().numpy() for m in cnns[prop]], axis=0))
        out[prop] = round(float(np.concatenate(vals).mean()), 4)
    return out


def evaluator_summary(pred: dict, continuous: list) -> dict:
    shares = {}
    ok = np.ones(len(next(iter(pred.values()))), bool)
    for name, (key, positive) in CONCEPTS.items():
        hit = pred[key] >= 0.5 if positive else pred[key] < 0.5
        shares[name] = round(float(hit.mean()), 4)
        ok &= hit
    shares["all_four"] = round(float(ok.mean()), 4)
    return {"evaluator_shares": shares, "evaluator_std": {c: round(float(np.std(pred[c])), 4) for c in continuous}}


def base_generator(state: dict, cfg: GeneratorConfig) -> StyleGANGenerator:
    g = StyleGANGenerator(cfg)
    load_state_dict_strict(g, state, what="base generator")
    return g.eval()


def acceptance(g9, g1, gbase_state: dict | None, kept, cnns: dict, ev, *, n: int = 1000, seed: int = 0,
               profile=None, batch_size: int = 50) -> dict:
    """Every acceptance figure (module docstring) as a JSON-ready dict; ``kept``: the kept set (uint8 NCHW)."""
    rng = np.random.default_rng([int(seed), 17_000])
    z = rng.normal(size=(n, g9.cfg.z_dim)).astype(np.float32)
    y = rng.normal(size=(n, g9.spec.label_dim)).astype(np.float32)
    gens = {"v9": g9, "v1": g1}
    if gbase_state is not None:
        gens["base"] = base_generator(gbase_state, g9.cfg)
    out = {"n": int(n), "seed": int(seed), "z": "N(0, I) float64 draws cast to float32", "labels": "N(0, I)",
           "noise": "stored", "cnn_input": "in memory, no JPEG, eval mode", "generators": {}}
    kept_nhwc = kept.images.permute(0, 2, 3, 1).numpy()
    continuous = list(ev.spec.continuous) if ev is not None else []
    kept_feats = None
    if ev is not None:
        kp, kept_feats = evaluator_outputs(ev, kept_nhwc)
        out["kept_set"] = {"images": int(len(kept_nhwc)), **evaluator_summary(kp, continuous),
                           "cnn_means": cnn_means(cnns, kept_nhwc)}
    for name, g in gens.items():
        if name == "base":
            imgs = np.concatenate([generate_uint8(g, z[a:a + batch_size]) for a in range(0, n, batch_size)])
        else:
            imgs = np.concatenate([postprocess(synthesize(g, z[a:a + batch_size], y[a:a + batch_size]))
                                   for a in range(0, n, batch_size)])
        rec = {"cnn_means": cnn_means(cnns, imgs)}
        if ev is not None:
            pred, feats = evaluator_outputs(ev, imgs)
            rec.update(evaluator_summary(pred, continuous))
            ks = out["kept_set"]["evaluator_std"]
            rec["std_ratio_to_kept"] = {c: round(rec["evaluator_std"][c] / max(ks[c], 1e-12), 3) for c in continuous}
            rec["std_ratio_ok"] = bool(all(v >= STD_RATIO_MIN for v in rec["std_ratio_to_kept"].values()))
            rec["frechet_to_kept"] = round(frechet_distance(feats, kept_feats), 3)
        out["generators"][name] = rec
    out["branch_end"] = branch_stats(g9, torch.as_tensor(z), torch.as_tensor(y))
    if ev is not None:
        fd = {k: v["frechet_to_kept"] for k, v in out["generators"].items()}
        out["checks"] = {
            "concept_97": bool(all(v >= 0.97 for k, v in out["generators"]["v9"]["evaluator_shares"].items()
                                   if k != "all_four")),
            "std_ratio_ge_0.8": out["generators"]["v9"]["std_ratio_ok"],
            "frechet_v9_lt_v1_lt_base": bool(fd["v9"] < fd["v1"] and ("base" not in fd or fd["v1"] < fd["base"])),
        }
    return out


__all__ = ["CONCEPTS", "acceptance", "cnn_means", "evaluator_outputs", "frechet_distance"]
