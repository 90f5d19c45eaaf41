"""Fidelity of the synthface default generator, judged by the independent evaluator.

    python -m synthface.evaluate_generator            # trains the evaluator if its weights are missing

1. The evaluator (``synthface/weights/evaluator.pth``) is trained on rendered images with
   their true parameters only (never on generator output).
2. For 1,000 held-out z: Pearson r between its output on G(z) and truth(z) for the continuous
   factors and accuracy for the binary ones; the same evaluator on render(P(z)) is the ceiling;
   pixel MAE between G(z) and render(P(z)).
3. How linearly w encodes the world: ridge regression from w (and, for comparison, from z)
   to each factor, fitted on 4,000 z and scored (Pearson r / accuracy) on the held-out z.
   A very linear w makes the later direction finding easier than in a real StyleGAN.
4. ``metrics.json``, ``report.md`` and a contact sheet of G(z) beside render(P(z)).

    python -m synthface.evaluate_generator --generator runs/synthface/train_g2/generator.pth
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge

from pipeline.io import atomic_write_json
from pipeline.profiles import REPO_ROOT, load_profile
from pipeline.reports import contact_sheet_figure, markdown_table, save_figure, write_report
from pipeline.checkpoint import read_checkpoint, save_checkpoint
from stylegan.sampling import build_generator, generate_uint8
from synthface.evaluator import Evaluator, fidelity_scores, train_evaluator
from synthface.renderer import render_batch
from synthface.truth import world as world_map

CONTINUOUS = ["eyes_open", "mouth_open", "pose", "hair_color", "hair_length", "bg_mean", "bg_std", "hairstyle"]
BINARY = ["female", "glasses", "old", "quality_defect"]
EVALUATOR_WEIGHTS = REPO_ROOT / "synthface" / "weights" / "evaluator.pth"
EVAL_SEED = 777_000          # held-out z stream: never used for training anything
N_EVAL = 1000


def labels_of(table) -> dict:
    return {n: table[n].to_numpy(np.float32) for n in CONTINUOUS + BINARY}


def measure_fidelity(g, world, ev: Evaluator, z: np.ndarray, resolution: int, with_ceiling: bool = False,
                     batch_size: int = 32) -> dict:
    """Independent-evaluator scores of G(z) against truth(z) (and of render(P(z)), the ceiling),
    plus the pixel MAE between G(z) and render(P(z)). Runs G in eval mode, without gradients."""
    truth = world.truth(z)
    rendered, _ = render_batch(truth, resolution=resolution)
    was_training = g.training
    g.eval()
    generated = np.concatenate([generate_uint8(g, z[i:i + batch_size]) for i in range(0, len(z), batch_size)])
    g.train(was_training)
    t = labels_of(truth)
    out = {"generator": fidelity_scores(ev.predict(generated), t, CONTINUOUS, BINARY),
           "pixel_mae_uint8": float(np.abs(generated.astype(np.float32) - rendered.astype(np.float32)).mean()),
           "images": generated, "renders": rendered}
    if with_ceiling:
        out["ceiling"] = fidelity_scores(ev.predict(rendered), t, CONTINUOUS, BINARY)
    return out


def flat_scores(scores: dict) -> dict:
    """{'eyes_open': {'pearson_r': r}, 'female': {'accuracy': a}} -> {'eyes_open': r, 'female': a}."""
    return {n: round(float(next(iter(v.values()))), 4) for n, v in scores.items()}


def linear_readout(g, world, z_test: np.ndarray, n_train: int = 4000, seed: int = 777_100) -> dict:
    """Ridge (continuous) / logistic (binary) read-out of each factor from w and from z:
    fitted on ``n_train`` z of the stream ``seed``, scored on ``z_test``."""
    z_tr = np.random.default_rng(seed).standard_normal((n_train, world.z_dim), dtype=np.float32)
    with torch.inference_mode():
        w_tr, w_te = (g.mapping(torch.from_numpy(zz))["w"].numpy() for zz in (z_tr, z_test))
    t_tr, t_te = labels_of(world.truth(z_tr)), labels_of(world.truth(z_test))
    out = {}
    for n in CONTINUOUS + BINARY:
        row = {}
        for space, a, b in (("w", w_tr, w_te), ("z", z_tr, z_test)):
            if n in BINARY:
                m = LogisticRegression(max_iter=3000).fit(a, t_tr[n] >= 0.5)
                row[space] = round(float(m.score(b, t_te[n] >= 0.5)), 4)
            else:
                m = Ridge(alpha=1.0).fit(a, t_tr[n])
                row[space] = round(float(np.corrcoef(m.predict(b), t_te[n])[0, 1]), 4)
        out[n] = row
    return out


def load_or_train_evaluator(world, resolution: int, path: Path = EVALUATOR_WEIGHTS, steps: int = 2500,
                            show_progress: bool = True) -> Evaluator:
    if path.is_file():
        return Evaluator.from_state(read_checkpoint(path))

    def sample(step, bs):
        z = np.random.default_rng([555, step]).standard_normal((bs, world.z_dim), dtype=np.float32)
        t = world.truth(z)
        rgb, _ = render_batch(t, resolution=resolution)
        return rgb, labels_of(t)

    ev, log = train_evaluator(sample, CONTINUOUS, BINARY, steps=steps, show_progress=show_progress)
    save_checkpoint(ev.state(), path)
    return ev


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="synthface")
    ap.add_argument("--n", type=int, default=N_EVAL)
    ap.add_argument("--evaluator", default=str(EVALUATOR_WEIGHTS))
    ap.add_argument("--evaluator-steps", type=int, default=2500)
    ap.add_argument("--generator", default=None, help="a generator checkpoint instead of the profile's")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    profile = load_profile(args.profile)
    if args.generator:
        profile = type(profile)({**profile, "generator_checkpoint": str(Path(args.generator).resolve())})
    out = Path(args.out) if args.out else profile.stage_dir("generator_fidelity")
    world = world_map(profile["generator"]["z_dim"], profile["world_seed"])
    t0 = time.perf_counter()
    ev = load_or_train_evaluator(world, profile["resolution"], Path(args.evaluator), args.evaluator_steps)
    g = build_generator(profile)
    z = np.random.default_rng(EVAL_SEED).standard_normal((args.n, world.z_dim), dtype=np.float32)
    fid = measure_fidelity(g, world, ev, z, profile["resolution"], with_ceiling=True)
    on_gen, ceiling, mae = fid["generator"], fid["ceiling"], fid["pixel_mae_uint8"]
    generated, rendered = fid["images"], fid["renders"]
    readout = linear_readout(g, world, z)
    metrics = {"n": args.n, "eval_seed": EVAL_SEED, "generator_checkpoint": str(profile["generator_checkpoint"]),
               "generator": on_gen, "ceiling_on_renders": ceiling, "pixel_mae_uint8": mae,
               "linear_readout": readout, "seconds": round(time.perf_counter() - t0, 1)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", metrics)
    pairs = []
    for i in range(32):
        pairs += [generated[i], rendered[i]]
    sheet = contact_sheet_figure(pairs, ["G(z)", "render(P(z))"] * 32, out / "report" / "g_vs_render.png", ncols=8,
                                 suptitle="generated (left) beside rendered truth (right), held-out z")
    rows = [[n, on_gen[n].get("pearson_r", on_gen[n].get("accuracy")),
             ceiling[n].get("pearson_r", ceiling[n].get("accuracy")),
             "r" if "pearson_r" in on_gen[n] else "accuracy"] for n in CONTINUOUS + BINARY]
    write_report(out, "synthface generator fidelity", [
        ("Scores (independent evaluator, trained on renders only)",
         markdown_table(["factor", "on G(z)", "ceiling: on render(P(z))", "metric"], rows)
         + f"\n\nPixel MAE |G(z) - render(P(z))| = {mae:.2f} (uint8 levels), {args.n} held-out z."),
        ("G(z) beside render(P(z))", f"![pairs](report/{sheet.name})"),
        ("How linearly w encodes the world (ridge / logistic read-out, 4,000 training z)",
         markdown_table(["factor", "from w", "from z"], [[n, v["w"], v["z"]] for n, v in readout.items()])),
    ])
    for n, *_ in rows:
        v = on_gen[n]
        print(f"{n:>15}: {'r' if 'pearson_r' in v else 'acc'} {list(v.values())[0]:.4f}  "
              f"(ceiling {list(ceiling[n].values())[0]:.4f})")
    print(f"pixel MAE {mae:.2f}")
    print("linear read-out from w / z:", {n: (v["w"], v["z"]) for n, v in readout.items()})


if __name__ == "__main__":
    main()
