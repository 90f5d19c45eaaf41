"""The oracle generator (evaluation.oracle): the renderer with the label's eyes / mouth / pose, all else z's."""
import numpy as np
import torch

from cnn.property_score_cnn import P7
from stylegan.sampling import latent_z
from evaluation.oracle import CONTROLLED, OracleGenerator
from synthface.world import WorldMap


def test_oracle_sets_the_controlled_parameters_from_the_label_and_keeps_the_rest():
    world = WorldMap(z_dim=96, seed=0)
    z = latent_z(range(200), 96, 0)
    t = world.truth(z)
    labels = np.zeros((200, 7), np.float32)
    for p, col in CONTROLLED.items():           # labels = standardised truth: the fit inverts it exactly
        v = t[col].to_numpy(np.float64)
        labels[:, P7.index(p)] = (v - v.mean()) / v.std()
    oracle = OracleGenerator.fitted(world, P7, z, labels, resolution=32)
    zz = np.repeat(z[:2], 3, axis=0)
    lab = np.zeros((6, 7), np.float32)
    lab[:, P7.index("eyes")] = [-1, 0, 1, -1, 0, 1]
    params = oracle.parameters(zz, lab)
    base = world.truth(zz)
    f = oracle.fit["eyes"]
    assert np.allclose(params["eyes_open"], np.clip(lab[:, 0] * f["scale"] + f["offset"], f["low"], f["high"]))
    assert np.diff(params["eyes_open"].to_numpy()[:3]).min() > 0
    others = [c for c in base.columns if c not in CONTROLLED.values()]
    assert np.array_equal(params[others].to_numpy(), base[others].to_numpy())
    img = oracle.render(torch.from_numpy(zz), torch.from_numpy(lab))
    assert img.shape == (6, 3, 32, 32) and img.min() >= -1 and img.max() <= 1
    assert not torch.equal(img[0], img[2])                 # the eyes changed the image
