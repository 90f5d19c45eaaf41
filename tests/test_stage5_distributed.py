"""Scale-out: 2 processes (gloo, DistributedDataParallel, sharded seeded batches) match 1 process at the
same global batch. Tiny models, one thread per process, a few steps of the v3 and v1 loops.

Tolerance: parameters after 3 steps agree to atol 1e-5 (float32 sums in another order; Adam's
normalised steps keep such differences at that level for a few steps)."""
import numpy as np
import torch

from tests.distributed_harness import single_and_gloo
from stylegan_modified.distributed import DistContext, epoch_batches, shard_indices

STEPS = 3
GLOBAL_BATCH = 8


def _models():
    from cnn.filter_cnns import FilterCNN
    from cnn.property_score_cnn import PropertyScoreCNN
    from stylegan import GeneratorConfig
    from stylegan.discriminator import DiscriminatorConfig
    from stylegan_modified import CVAEEncoder, FineTuneV3, build_discriminator, build_generator
    from evaluation.networks import GenderEnsemble
    gcfg = GeneratorConfig(resolution=32, z_dim=16, w_dim=16, mapping_layers=2, mapping_fmaps=16, fmaps_base=128,
                           fmaps_max=16)
    dcfg = DiscriminatorConfig(resolution=32, fmaps_base=128, fmaps_max=16)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cnn = PropertyScoreCNN(64, 0.125, 1, 8)
        gender = GenderEnsemble([FilterCNN("gender", 32, 0.125, 1)])
    return gcfg, dcfg, cnn, gender, build_generator, build_discriminator, CVAEEncoder, FineTuneV3


def _data():
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (24, 3, 32, 32), generator=g, dtype=torch.uint8),
            torch.randn(24, 7, generator=g).numpy())


def _run(ctx: DistContext) -> dict:
    from training.gan import GanSettings, GanTrainer
    from training.cvae import V3Settings, V3Trainer
    torch.set_num_threads(1)
    gcfg, dcfg, cnn, gender, build_g, build_d, Enc, FT = _models()
    images, labels = _data()
    x_all = images.float() / 127.5 - 1

    class Crop32(torch.nn.Module):          # the tiny property CNN is 64 px: upsample the 32-px images
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(torch.nn.functional.interpolate(x, scale_factor=2))

    out = {}
    # v3
    g3 = build_g(gcfg, "v3", seed=1)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        enc = Enc(32, 7, 16, channels=(4, 4, 8, 8, 8), hidden=16)
    model = FT(enc, g3, Crop32(cnn).requires_grad_(False), gender.requires_grad_(False))
    s3 = V3Settings(batch_size=GLOBAL_BATCH, gen_labels="box", lr_generator=1e-2, lr_label=1e-3)
    t3 = V3Trainer(model, labels, s3, ctx)
    rows3 = []
    for k, b in enumerate(epoch_batches(len(images), GLOBAL_BATCH, 0, 0, ctx)[:STEPS]):
        rows3.append(t3.train_step(x_all[b], torch.from_numpy(labels[b]), 0, k)["total_loss"])
    out["v3"] = {k: v.detach().clone() for k, v in g3.state_dict().items() if k.startswith("mapping")}
    out["v3_enc"] = {k: v.detach().clone() for k, v in enc.state_dict().items()}
    out["v3_loss"] = rows3
    # v1 (minibatch-std group 2 <= the per-process batch: same groups as one process)
    g1, d1 = build_g(gcfg, "v1", seed=3), build_d(dcfg, "v1", seed=4, mbstd_group_size=2)
    t1 = GanTrainer(g1, d1, labels, GanSettings(batch_size=GLOBAL_BATCH, lr_generator=1e-3), ctx)
    rows1 = []
    for k, b in enumerate(epoch_batches(len(images), GLOBAL_BATCH, 0, 0, ctx)[:STEPS]):
        r = t1.train_step(x_all[b], torch.from_numpy(labels[b]), 0, k)
        rows1.append((r["d_loss"], r["g_loss"], r["g_train_count"], r["real_fake_auroc"]))
    out["v1_g"] = {k: v.detach().clone() for k, v in g1.state_dict().items() if k.startswith("mapping")}
    out["v1_d"] = {k: v.detach().clone() for k, v in d1.state_dict().items() if k.startswith("layer")}
    out["v1_rows"] = rows1
    return out


def test_sharded_batches_are_the_single_process_batches():
    one = DistContext()
    two = [DistContext(rank=r, world=2) for r in range(2)]
    for epoch in (0, 3):
        b1 = epoch_batches(20, 4, 7, epoch, one)
        b2 = [epoch_batches(20, 4, 7, epoch, c) for c in two]
        for k, b in enumerate(b1):
            assert sorted(b.tolist()) == sorted(np.r_[b2[0][k], b2[1][k]].tolist())
            assert b2[0][k].tolist() == b[0::2].tolist()              # global positions 0, 2, ... on rank 0
    assert not np.array_equal(shard_indices(20, 7, 0, one), shard_indices(20, 7, 1, one))   # reshuffled per epoch
    assert np.array_equal(shard_indices(20, 7, 1, one), shard_indices(20, 7, 1, one))       # seeded


def test_two_gloo_processes_match_one_process(tmp_path):
    single, double = single_and_gloo(_run, tmp_path)
    assert np.allclose(single["v3_loss"], double["v3_loss"], atol=1e-5)
    for key in ("v3", "v3_enc", "v1_g", "v1_d"):
        for k, v in single[key].items():
            assert torch.allclose(v, double[key][k], atol=1e-5, rtol=1e-4), (key, k)
    for a, b in zip(single["v1_rows"], double["v1_rows"]):
        assert a[2] == b[2] and np.allclose(a[:2], b[:2], atol=1e-5) and abs(a[3] - b[3]) < 1e-9
