"""Train the synthface default generator (and its discriminator); see ``generator_training``.

    python -m synthface.train_generator                 # full training, resumes if interrupted
    python -m synthface.train_generator --steps 50 --d-steps 10 --mapping-warmup-steps 20 --out /tmp/g   # quick check

Writes ``<out>/train_state.pth`` (resumable), ``train_log.json``, ``eval_log.json`` (the
independent evaluator on a validation stream of z every ``--eval-every`` steps),
``loss_curve.png``, ``metrics.json`` and, when finished, the shipped weights
``synthface/weights/generator.pth`` (``{'generator': EMA state_dict}``) and
``synthface/weights/discriminator.pth`` (``{'discriminator': state_dict}``), float32.
"""
import argparse
import time
from dataclasses import asdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from pipeline.io import atomic_write_json
from pipeline.profiles import REPO_ROOT, load_profile
from pipeline.reports import save_figure
from pipeline.checkpoint import save_checkpoint
from synthface.evaluate_generator import EVALUATOR_WEIGHTS, flat_scores, load_or_train_evaluator, measure_fidelity
from synthface.generator_training import RenderSource, TrainSettings, train_default_generator
from synthface.renderer import render_batch
from synthface.truth import world as world_map

WEIGHTS = REPO_ROOT / "synthface" / "weights" / "generator.pth"
D_WEIGHTS = REPO_ROOT / "synthface" / "weights" / "discriminator.pth"
VALIDATION_SEED = 777_500      # validation z stream for the training-time evaluations (not the final test stream)


def plot_training_log(log: list[dict], path: Path, eval_log: list[dict] | None = None) -> Path:
    """Loss curves (generator phases, discriminator) and, if given, the validation scores."""
    n_ax = 3 if eval_log else 2
    fig, axes = plt.subplots(1, n_ax, figsize=(5 * n_ax, 3.5))
    g = [r for r in log if "l1" in r]
    wu = [r for r in log if "warmup_aux" in r]
    dd = [r for r in log if "d_loss" in r]
    if g:
        axes[0].plot([r["step"] for r in g], [r["l1"] for r in g], label="weighted L1")
        axes[0].plot([r["step"] for r in g], [r["aux"] for r in g], label="aux MSE", alpha=0.6)
        if "tex" in g[-1]:
            axes[0].plot([r["step"] for r in g], [r.get("tex", np.nan) for r in g], label="texture stats", alpha=0.6)
    if wu:
        axes[0].plot([r["step"] for r in wu], [r["warmup_aux"] for r in wu], label="warm-up aux MSE (mapping only)")
    if g or wu:
        axes[0].set_yscale("log"); axes[0].set_xlabel("step"); axes[0].legend(fontsize=7); axes[0].set_title("generator")
    if dd:
        axes[1].plot([r["step"] for r in dd], [r["d_loss"] for r in dd], label="D loss")
        axes[1].set_xlabel("step"); axes[1].legend(); axes[1].set_title("discriminator")
    if eval_log:
        keys = [k for k in eval_log[-1] if k not in ("step", "regression_step", "pixel_mae")]
        for k in keys:
            axes[2].plot([r["regression_step"] for r in eval_log], [r[k] for r in eval_log], label=k)
        axes[2].axhline(0.9, color="k", lw=0.5, ls="--")
        axes[2].set_ylim(0, 1); axes[2].set_xlabel("regression step"); axes[2].legend(fontsize=6, ncol=2)
        axes[2].set_title("validation: independent evaluator on G(z)")
    return save_figure(fig, path)


def main(argv=None):
    d = TrainSettings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="synthface")
    for name, val in asdict(d).items():
        if isinstance(val, (int, float, str)) and not isinstance(val, bool):
            ap.add_argument(f"--{name.replace('_', '-')}", type=type(val), default=val)
    ap.add_argument("--out", default=None, help="work folder (default: <data root>/train_generator)")
    ap.add_argument("--weights", default=str(WEIGHTS), help="where the finished generator weights go")
    ap.add_argument("--d-weights", default=str(D_WEIGHTS), help="where the finished discriminator weights go")
    ap.add_argument("--eval-n", type=int, default=256, help="validation z per evaluation")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    s = TrainSettings(**{k: getattr(args, k) for k in asdict(d) if hasattr(args, k)})
    profile = load_profile(args.profile)
    out = Path(args.out) if args.out else profile.stage_dir("train_generator")
    res_px = profile["resolution"]
    world = world_map(profile["generator"]["z_dim"], profile["world_seed"])
    source = RenderSource(world, lambda t: render_batch(t, resolution=res_px), profile["generator"]["z_dim"],
                          aux_targets=s.aux_targets, rare_boost=s.rare_boost)
    z_val = np.random.default_rng(VALIDATION_SEED).standard_normal((args.eval_n, world.z_dim), dtype=np.float32)
    judge = {}

    def eval_fn(g):
        # the evaluator is loaded at the first validation; while its weights do not exist yet
        # (being trained in another process) the validation is skipped
        if "ev" not in judge:
            if not EVALUATOR_WEIGHTS.is_file():
                return None
            judge["ev"] = load_or_train_evaluator(world, res_px)
        fid = measure_fidelity(g, world, judge["ev"], z_val, res_px)
        return {**flat_scores(fid["generator"]), "pixel_mae": round(fid["pixel_mae_uint8"], 3)}

    t0 = time.perf_counter()
    res = train_default_generator(profile, source, out, s, show_progress=not args.no_progress, eval_fn=eval_fn)
    plot_training_log(res["log"], out / "loss_curve.png", res["eval_log"])
    g_log = [r for r in res["log"] if "l1" in r]
    metrics = {"settings": asdict(s), "seconds_this_run": round(time.perf_counter() - t0, 1),
               "final_weighted_l1": g_log[-1]["l1"] if g_log else None,
               "mean_step_seconds": (sum(r["seconds"] for r in g_log) / len(g_log)) if g_log else None,
               "validation": res["eval_log"][-1] if res["eval_log"] else None,
               "validation_seed": VALIDATION_SEED, "validation_n": args.eval_n}
    atomic_write_json(out / "metrics.json", metrics)
    save_checkpoint({"generator": res["generator"].state_dict()}, Path(args.weights))
    save_checkpoint({"discriminator": res["discriminator"].state_dict()}, Path(args.d_weights))
    print(f"weights written to {args.weights} and {args.d_weights}")


if __name__ == "__main__":
    main()
