"""Train the *teacher*: a second attribute net, used only as the feature extractor of the
perceptual loss in the default generator's training (``synthface.generator_training``).

It is trained exactly like the independent evaluator (rendered images and their true
parameters only), but with another seed, another z stream and a wider stem, so that the
generator is never optimised against the network that judges it (``evaluator.pth``).

    python -m synthface.train_teacher            # writes synthface/weights/teacher.pth
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from pipeline.profiles import REPO_ROOT, load_profile
from pipeline.checkpoint import save_checkpoint
from synthface.evaluate_generator import BINARY, CONTINUOUS, labels_of
from synthface.evaluator import train_evaluator
from synthface.renderer import render_batch
from synthface.truth import world as world_map

TEACHER_WEIGHTS = REPO_ROOT / "synthface" / "weights" / "teacher.pth"
TEACHER_WIDTH = 48
TEACHER_SEED = 1
TEACHER_STREAM = 556          # the evaluator uses z stream 555


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="synthface")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(TEACHER_WEIGHTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    world = world_map(profile["generator"]["z_dim"], profile["world_seed"])

    def sample(step, bs):
        z = np.random.default_rng([TEACHER_STREAM, step]).standard_normal((bs, world.z_dim), dtype=np.float32)
        t = world.truth(z)
        rgb, _ = render_batch(t, resolution=profile["resolution"])
        return rgb, labels_of(t)

    ev, _ = train_evaluator(sample, CONTINUOUS, BINARY, steps=args.steps, batch_size=args.batch_size,
                            seed=TEACHER_SEED, width=TEACHER_WIDTH)
    save_checkpoint(ev.state(), Path(args.out))
    print(f"teacher written to {args.out}")


if __name__ == "__main__":
    main()
