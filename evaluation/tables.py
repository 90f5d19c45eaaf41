"""Tables of a fine-tuned generator's behaviour beyond the generation test's pass count: the female
share of random outputs, leak and identity beside the oracle's, the judges' summary.

* :func:`female_share`: share of female outputs over seeded random (z, N(0, 1) label) pairs, by
  the stage-2 gender CNN and the independent evaluator;
* :func:`leak_identity_table`: leak (mean |r| between a label and another measured property) and
  identity stability per judge, with the oracle's figures (:mod:`evaluation.oracle`) beside them;
* :func:`generation_test_table` / :func:`female_table`: the report tables of a generation test and a female share.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline.reports import markdown_table
from pipeline.vocabulary import CONTROLLED as P3
from stylegan.generator import postprocess
from stylegan.sampling import latent_z
from stylegan_modified.conditional import batch_ranges, synthesize

ORACLE_METRICS = "stage5/oracle/metrics.json"      # under the data root (run_oracle.py)


def random_labels(n: int, label_names, seed: int) -> np.ndarray:
    """N(0, 1) labels [n, L] from a seeded stream (the original's random-label protocol)."""
    return np.random.default_rng([int(seed), 31]).standard_normal((n, len(label_names))).astype(np.float32)


def female_share(g, gender_cnn, evaluator, n: int = 300, seed: int = 0, z=None, batch_size: int = 50,
                 labels: np.ndarray | None = None, z_source: str | None = None) -> dict:
    """Share of female outputs over ``n`` seeded random (z, N(0, 1) label) pairs (or the given z / labels),
    by the gender CNN (mean probability >= 0.5) and by the evaluator's ``female`` (>= 0.5)."""
    z_given = z
    z = latent_z(range(n), int(g.cfg.z_dim), int(seed) + 900_000) if z is None else np.asarray(z, np.float32)
    lab = random_labels(len(z), g.label_names, seed) if labels is None else labels
    probs_g, probs_e = [], []
    for a, b in batch_ranges(len(z), batch_size):
        imgs = synthesize(g, z[a:b], lab[a:b]).cpu()
        if gender_cnn is not None:
            with torch.inference_mode():
                probs_g.append(gender_cnn((imgs.clamp(-1, 1) + 1) / 2).reshape(-1).numpy())
        if evaluator is not None:
            probs_e.append(evaluator.predict(postprocess(imgs))["female"])
    out = {"n": int(len(z)), "seed": int(seed), "labels": "N(0, 1)" if labels is None else "given",
           "z": z_source or ("seeded N(0, I)" if z_given is None else "given")}
    if probs_g:
        p = np.concatenate(probs_g)
        out["gender_cnn"] = {"share": float((p >= 0.5).mean()), "mean_probability": float(p.mean())}
    if probs_e:
        p = np.concatenate(probs_e)
        out["evaluator"] = {"share": float((p >= 0.5).mean()), "mean_probability": float(p.mean())}
    return out


def oracle_reference(data_root: Path) -> dict | None:
    """The generation test of the ideal generator (``run_oracle.py``), when it was run."""
    path = Path(data_root) / ORACLE_METRICS
    return json.loads(path.read_text()) if path.is_file() else None


def leak_identity_table(test: dict | None, oracle: dict | None) -> str:
    """Leak (mean |r| over the z between a label and another measured property) and identity stability
    (within-z std / across-z std), per judge, beside the oracle's figures through the same judges."""
    if test is None:
        return "No generation test."
    rows = []
    for name, j in test["judges"].items():
        o = (oracle or {}).get("judges", {}).get(name, {})
        for k, v in sorted(j.get("leak_mean_abs_r", {}).items()):
            ov = o.get("leak_mean_abs_r", {}).get(k)
            rows.append([name, f"leak {k.replace('_to_', ' -> ')}", f"{v:.3f}", "" if ov is None else f"{ov:.3f}"])
        for k, v in sorted((j.get("identity_mean_within_std") or {}).items()):
            ov = (o.get("identity_mean_within_std") or {}).get(k)
            rows.append([name, f"identity {k} (within / across std)", f"{v:.3f}", "" if ov is None else f"{ov:.3f}"])
    note = ("" if oracle else "\n\nRun `python run_oracle.py` for the oracle column (the renderer with "
            "the label's eyes / mouth / pose and everything else z's: the least leak these judges can show).")
    return markdown_table(["judge", "figure", "this generator", "oracle"], rows) + note


def generation_test_table(test: dict | None) -> str:
    if test is None:
        return "No judge available: the generation test did not run."
    rows = []
    for name, summ in test["judges"].items():
        rows.append([name, f"{summ['passes']} / {test['n_z']}"]
                    + [f"{summ['mean'][f'{p}_corr']:.3f} / {summ['best'][f'{p}_corr']:.3f}" for p in P3]
                    + [f"{summ['mean'][f'{p}_mae']:.3f}" for p in P3])
    return (markdown_table(["judge", "passes"] + [f"{p} r mean / best" for p in P3] + [f"{p} MAE mean" for p in P3],
                           rows) + "\n\nFull report: [generation_test/report.md](generation_test/report.md)")


def female_table(fem: dict) -> str:
    rows = [[k, f"{v['share']:.1%}", f"{v['mean_probability']:.3f}"] for k, v in fem.items() if isinstance(v, dict)]
    return (f"{fem['n']} random outputs (z: {fem['z']}; labels {fem['labels']}):\n\n"
            + markdown_table(["judge", "female share", "mean probability"], rows))
