"""Leak probe for a finished stage-7 SVM run: re-run its first cases with each direction set
post-processed per case, and print the evaluator's leak (mean |r| of α_p with q) beside the run's
matched oracle. An experiment bench for issue 18's leak item, not part of the stage.

Variants (comma-separated; ``E:`` in front applies the variant to the eyes direction only):

* ``base``      the run's conditional SVM directions as they are (reproduces the run's cases);
* ``hair``, ``hair+bg``, ``hair+bg+skin`` …  each direction projected off the local gradients (at the
  case's mid vector) of the mean R, G, B of those parser regions (stage-3 segmenter on the case's
  unedited image) and off the other two directions, then rescaled to its norm;
* ``jc``        each direction projected off the property CNN's gradients (through the generator) of
  the other two controlled properties, and off the other two directions;
* ``js`` / ``jsb``  ``jc`` plus the CNN's hair colour, hair length, background mean (and background std);
* ``local:<λ>``  eyes and mouth each replaced by the direction that keeps the run's directions'
  components (d·d_p = 1, d·d_q = 0) and changes the fewest pixels outside its own parser region (eyes:
  both eyes, mouth: lips and inner mouth, each dilated by ``--dilate`` px): argmin dᵀ(M_p + λ·m̄·I)d with
  M_p = Σ Jᵀ·outside_p·J over ``--metric-samples`` images (finite-difference Jacobians of the image in
  the mid vector, step ``--fd-step``), m̄ = trace(M_p) / dim; pose kept;
* ``localr:<λ>``  ``local`` plus, for eyes and mouth, no first-order change of the mean R, G, B of the hair
  and of the background (the constraint d·g = 0 for those six region-mean gradients, averaged over the
  metric's images);
* ``localp:<λ>:<k>``  ``local`` with the other property's region (mouth for eyes, eyes for mouth) weighted
  k times more than the rest of the outside;
* ``conf:<λ>``  eyes and mouth confined to their region: d = argmin |outside·J d|² + |inside·J (d − v_p)|²
  + λ·m̄·|d − v_p|² (the fitted direction's change inside the region, none outside);
* ``paste:hair+bg`` …  a diagnostic, not an edit: the run's directions, but before scoring every edited
  image gets those regions' pixels (parser mask of the unedited image) copied from the unedited image,
  so what remains of a leak into hair colour / background comes from the other pixels.

    OHLORA_DATA_ROOT=<root> python benchmarks/leak_probe.py <root>/synthface/stage7/runs/svm_w_n20000_x1.5_cond \\
        --generator <root>/synthface/stage6/v9/generator.pth --cases 30 --variants base,hair,hair+bg,jc,js

Each variant costs about 35 s for 30 cases on one thread (1,500 images, evaluator, JPEG).
Figures: README, stage 7 ("Leak: what was tried").
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.profiles import load_profile                                          # noqa: E402
from pipeline.vocabulary import PROPERTIES as P7                                    # noqa: E402
from segmentation.synth_segmenter import load_segmenter, parse_crops, whole_frame_crops  # noqa: E402
from stages.vectorfind_inputs import build_scorers, load_generator                  # noqa: E402
from stages.vectorfind_report import leak_of                                        # noqa: E402
from stylegan.generator import postprocess                                          # noqa: E402
from vectorfind.cases import alpha_table, passes, pearson                           # noqa: E402
from vectorfind.directions import DirectionSet, apply, project_out                  # noqa: E402
from vectorfind.pixel_local import local_directions                                 # noqa: E402
from vectorfind.protocols import CONTROLLED                                         # noqa: E402
from vectorfind.sampling import case_latents, uint8_to_scorer                       # noqa: E402

REGIONS = {"hair": (10,), "bg": (0,), "skin": (1,), "brows": (2, 3), "eyes": (4, 5), "mouth": (7, 8, 9)}
OWN = {"eyes": "eyes", "mouth": "mouth"}             # property -> its own region (``local`` variant)
SIDE = {"jc": (), "js": ("hair_color", "hair_length", "background_mean"),
        "jsb": ("hair_color", "hair_length", "background_mean", "background_std")}


class Probe:
    def __init__(self, profile, generator: str, point: str):
        self.point = point
        self.gen, _ = load_generator(profile, generator, image_batch=10)
        self.g = self.gen.g
        self.scorers, _ = build_scorers(profile, ["property_cnn", "evaluator"])
        self.cnn = self.scorers["property_cnn"].judge.model.eval()
        self.seg = load_segmenter(profile.path(profile["segmentation"]["checkpoint"]))

    def _synthesis(self, mids: torch.Tensor) -> torch.Tensor:
        """Images of mid vectors on the plain path (differentiable)."""
        return self.g.synthesis(self.g.truncation(self.g.w_from_mid(mids, self.point), 1.0, 0), False, None)["image"]

    def _image(self, mid: np.ndarray):
        m = torch.from_numpy(mid[None].astype(np.float32)).requires_grad_(True)
        return m, self._synthesis(m)

    def _labels(self, u8: np.ndarray, size: int) -> torch.Tensor:
        """[1, 1, size, size] float class ids of one uint8 image (parser on the whole frame, nearest)."""
        lab = parse_crops(self.seg, whole_frame_crops(u8), 8)[0]
        return torch.nn.functional.interpolate(torch.from_numpy(np.asarray(lab)).float()[None, None],
                                               size=size, mode="nearest")

    def cnn_grads(self, mid: np.ndarray, names) -> list:
        m, img = self._image(mid)
        out = self.cnn(img)[0]
        return [torch.autograd.grad(out[P7.index(q)], m, retain_graph=True)[0][0].double().numpy() for q in names]

    def region_grads(self, mid: np.ndarray, regions) -> list:
        m, img = self._image(mid)
        lab = self._labels(postprocess(img.detach()), img.shape[-1])[0, 0].long()
        grads = []
        for r in regions:
            mask = sum((lab == c).float() for c in REGIONS[r])
            if float(mask.sum()) < 20:              # region (nearly) absent in this face
                continue
            for ch in range(3):
                s = (img[0, ch] * mask).sum() / mask.sum()
                grads.append(torch.autograd.grad(s, m, retain_graph=True)[0][0].double().numpy())
        return grads

    @torch.inference_mode()
    def region_mask(self, mid: np.ndarray, regions) -> np.ndarray:
        """[R, R] bool: the parser's ``regions`` on the unedited image of ``mid``."""
        u8 = postprocess(self.gen.image_from_mid(torch.from_numpy(mid[None].astype(np.float32)), self.point))
        lab = self._labels(u8, u8.shape[1])[0, 0].long().numpy()
        return np.isin(lab, [c for r in regions for c in REGIONS[r]]), u8[0]

    @torch.no_grad()
    def pixel_metrics(self, mids: np.ndarray, step: float, dilate: int) -> dict:
        """p -> M_p [dim, dim] = Σ over ``mids`` of Jᵀ·(outside p's dilated region)·J (module docstring)."""
        dim = mids.shape[1]
        out = {p: np.zeros((dim, dim)) for p in OWN}
        out["regions"] = np.zeros((6, dim))
        for mid in mids:
            x = np.repeat(mid[None].astype(np.float32), dim + 1, axis=0)
            x[1:] += step * np.eye(dim, dtype=np.float32)
            img = torch.cat([self._synthesis(torch.from_numpy(x[a:a + 64])) for a in range(0, dim + 1, 64)]).double()
            jac = ((img[1:] - img[:1]) / step).reshape(dim, 3, -1)                   # [dim, 3, pixels]
            lab = self._labels(postprocess(img[:1].float()), img.shape[-1])
            for k, region in enumerate(("hair", "bg")):
                m = torch.isin(lab.long(), torch.tensor(REGIONS[region])).double().reshape(1, 1, -1)
                out["regions"][3 * k:3 * k + 3] += ((jac * m).sum(-1) / m.sum().clamp(min=1)).T.numpy() / len(mids)
            for p, region in OWN.items():
                own = torch.isin(lab.long(), torch.tensor(REGIONS[region])).double()
                own = torch.nn.functional.max_pool2d(own, 2 * dilate + 1, 1, dilate) if dilate else own
                keep = (1.0 - own).reshape(1, 1, -1)
                jm = (jac * keep).reshape(dim, -1)
                out[p] += (jm @ jm.T).numpy()
                jm = (jac * own.reshape(1, 1, -1)).reshape(dim, -1)
                out.setdefault(f"in_{p}", np.zeros((dim, dim)))
                out[f"in_{p}"] += (jm @ jm.T).numpy()
        return out

    def directions(self, variant: str, mid: np.ndarray, d: dict) -> dict:
        if variant.startswith("paste:"):
            return d
        if variant.startswith("conf:"):                # the stage's form (vectorfind.pixel_local), per property
            lam = float(variant.split(":")[1])
            out = dict(d)
            for p in OWN:
                inside = self.metrics[f"in_{p}"]
                out[p] = local_directions({p: d[p]}, {"all": self.metrics[p] + inside, p: inside}, lam)[p]
            return out
        if variant.startswith(("local:", "localr:", "localp:")):
            lam = float(variant.split(":")[1])
            k = float(variant.split(":")[2]) if variant.startswith("localp:") else 0.0
            c = np.stack([d[q] for q in CONTROLLED], axis=1)                         # [dim, 3]
            e = np.eye(len(CONTROLLED))
            if variant.startswith("localr:"):
                c = np.concatenate([c, self.metrics["regions"].T], axis=1)
                e = np.eye(c.shape[1])
            out = dict(d)
            for p in OWN:
                other = "mouth" if p == "eyes" else "eyes"
                m = self.metrics[p] + k * self.metrics[f"in_{other}"] if k else self.metrics[p]
                a = m + lam * np.trace(m) / len(m) * np.eye(len(m))
                ac = np.linalg.solve(a, c)
                out[p] = ac @ np.linalg.solve(c.T @ ac, e[CONTROLLED.index(p)])
            return out
        only = ("eyes",) if variant.startswith("E:") else CONTROLLED
        parts = variant.removeprefix("E:").split("+")
        if parts == ["base"]:
            return d
        extra = {}
        if parts[0] in SIDE:
            names = list(CONTROLLED) + list(SIDE[parts[0]])
            extra = dict(zip(names, self.cnn_grads(mid, names)))
        regions = [r for r in parts if r in REGIONS]
        shared = self.region_grads(mid, regions) if regions else []
        out = {}
        for p in CONTROLLED:
            if p not in only:
                out[p] = d[p]
                continue
            others = shared + [v for q, v in extra.items() if q != p] + [d[q] for q in CONTROLLED if q != p]
            out[p] = project_out(d[p], others) * np.linalg.norm(d[p])
        return out

    @torch.inference_mode()
    def measure(self, edited: np.ndarray, paste=None) -> dict:
        u8 = postprocess(self.gen.image_from_mid(torch.from_numpy(edited), self.point))
        if paste is not None:                          # (mask, unedited image): copy those pixels back
            mask, base = paste
            u8[:, mask] = base[mask]
        return {k: np.asarray(v, np.float64) for k, v in self.scorers["evaluator"](uint8_to_scorer(u8, True)).items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished stage-7 SVM run folder (conditional)")
    ap.add_argument("--generator", required=True)
    ap.add_argument("--profile", default="synthface")
    ap.add_argument("--cases", type=int, default=30)
    ap.add_argument("--variants", default="base,hair+bg,jc,js")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--metric-samples", type=int, default=16, help="images for the local variants' pixel metric")
    ap.add_argument("--fd-step", type=float, default=1.0)
    ap.add_argument("--dilate", type=int, default=3)
    ap.add_argument("--metric-cache", type=Path, help="keep / reuse the pixel metric in this .npz")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = json.loads((args.run / "run_config.json").read_text())["settings"]
    if cfg["method"] != "svm" or not cfg.get("conditional"):
        raise SystemExit(f"{args.run}: the probe needs a conditional SVM run")
    probe = Probe(load_profile(args.profile), args.generator, cfg["point"])
    ds = DirectionSet.load(args.run / "property_score_vectors_conditional", cfg["point"])
    groups = pd.read_csv(args.run / "image_generation_report" / "test_result.csv")["group_name"].tolist()
    z, label = case_latents(range(args.cases), probe.gen.z_dim, probe.gen.label_dim, int(cfg["seed"]), "seeded")
    table = alpha_table("svm", float(cfg["alpha_scale"]))
    alphas = {p: table[f"{p}_pm"].to_numpy() for p in CONTROLLED}
    if args.metric_cache and args.metric_cache.is_file():
        probe.metrics = dict(np.load(args.metric_cache))
    elif any(v.startswith("local") for v in args.variants.split(",")):
        t0 = time.perf_counter()
        zm, lm = case_latents(range(1000, 1000 + args.metric_samples), probe.gen.z_dim, probe.gen.label_dim,
                              int(cfg["seed"]), "seeded")                        # not the test's cases
        with torch.inference_mode():
            mids = probe.gen.mid_vectors(torch.from_numpy(zm), torch.from_numpy(lm), cfg["point"]).numpy()
        probe.metrics = probe.pixel_metrics(mids, args.fd_step, args.dilate)
        print(f"pixel metrics from {len(mids)} images ({time.perf_counter() - t0:.0f} s)", flush=True)
        if args.metric_cache:
            np.savez(args.metric_cache, **probe.metrics)
    leak, passed = {}, {}
    for var in args.variants.split(","):
        t0, recs, n_pass = time.perf_counter(), [], 0
        for i in range(args.cases):
            with torch.inference_mode():
                mid = probe.gen.mid_vectors(torch.from_numpy(z[i:i + 1]), torch.from_numpy(label[i:i + 1]),
                                            cfg["point"]).numpy()[0]
            d = probe.directions(var, mid, ds.for_group(groups[i]))
            paste = probe.region_mask(mid, var.split(":")[1].split("+")) if var.startswith("paste:") else None
            s = probe.measure(apply(np.repeat(mid[None], len(table), axis=0), alphas, d), paste)
            n_pass += passes({p: pearson(alphas[p], np.round(s[p], 4)) for p in CONTROLLED})
            recs.append(leak_of(table, s))
        leak[var] = pd.DataFrame([r["leak"] for r in recs]).abs().mean()
        passed[var] = n_pass
        print(f"{var}: {n_pass} of {args.cases} pass by the evaluator ({time.perf_counter() - t0:.0f} s)", flush=True)
    oracle = pd.Series({k: v["oracle_matched"] for k, v in
                        json.loads((args.run / "metrics.json").read_text())["leak_excess"]["evaluator"].items()})
    df = pd.DataFrame(leak)
    df["oracle (matched, run's)"] = oracle
    for var in leak:
        df[f"{var} excess"] = df[var] - oracle
    print(df.round(3).to_string())
    print("pairs with excess <= 0.1:", {v: int((df[f"{v} excess"] <= 0.1).sum()) for v in leak})
    return 0


if __name__ == "__main__":
    sys.exit(main())
