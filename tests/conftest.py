import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(2)


@pytest.fixture
def tiny_profile(tmp_path):
    """A profile with a 32x32 random-init generator (fast) whose data root is tmp_path."""
    from pipeline.profiles import Profile
    return Profile({
        "name": "tiny", "data_root": str(tmp_path / "runs"), "resolution": 32,
        "generator": {"resolution": 32, "z_dim": 32, "w_dim": 32, "mapping_layers": 2, "mapping_fmaps": 32,
                      "fmaps_base": 256, "fmaps_max": 32},
        "discriminator": {"resolution": 32, "fmaps_base": 256, "fmaps_max": 32},
        "generator_checkpoint": None, "random_init_seed": 7,
        "stage1": {"batch_size": 4},
    })
