"""The shipped synthface models: strict loading, shapes, size budget."""
from pathlib import Path

import torch

from pipeline.profiles import REPO_ROOT, load_profile
from pipeline.checkpoint import read_checkpoint
from stylegan.sampling import build_discriminator, build_generator, generate

WEIGHTS = REPO_ROOT / "synthface" / "weights"


def test_default_generator_and_discriminator_load_strictly():
    prof = load_profile("synthface")
    assert prof["generator_checkpoint"] == "synthface/weights/generator.pth"
    g = build_generator(prof)                       # strict, weights_only=True
    assert not g.training and not any(p.requires_grad for p in g.parameters())
    from stages.bases import base_discriminator_state
    d_path = prof.path(prof["stage5"]["discriminator_checkpoint"])
    assert d_path.is_file(), "the matching discriminator ships in its own file"
    d_state, where = base_discriminator_state(prof)
    assert where == f"{d_path} [discriminator]"
    d = build_discriminator(prof, d_state).eval()
    img = generate(g, torch.randn(2, g.cfg.z_dim))
    assert img.shape == (2, 3, 128, 128) and torch.isfinite(img).all()
    with torch.inference_mode():
        assert d(img).shape == (2, 1)
    assert all(v.dtype == torch.float32 for v in g.state_dict().values())


def test_default_evaluator_loads_strictly():
    from synthface.evaluator import Evaluator
    ev = Evaluator.from_state(read_checkpoint(WEIGHTS / "evaluator.pth"))
    assert "eyes_open" in ev.spec.continuous and "female" in ev.spec.binary and not ev.net.training


def test_shipped_weights_stay_small():
    total = sum(p.stat().st_size for p in Path(WEIGHTS).glob("*.pth"))
    assert total < 40 * 2**20, f"shipped synthface weights are {total / 2**20:.1f} MiB"
    # the shipped stage-5 runs: fine-tuned models as partial checkpoints against the base (pipeline.shipped)
    stage5 = sum(p.stat().st_size for p in (Path(WEIGHTS) / "stage5").rglob("*") if p.is_file())
    assert stage5 < 32 * 2**20, f"shipped stage-5 runs are {stage5 / 2**20:.1f} MiB"
