"""legacy: the original project's filter-CNN files load strictly through an explicit key mapping."""
import pytest
import torch

from cnn.filter_cnns import LAYERS, PROPERTIES, FilterCNN, arch_info
from legacy import (convert_original_filter_cnn, load_original_filter_cnn, original_filter_cnn_keys,
                    original_filter_cnn_shapes, read_genforce)
from pipeline.checkpoint import CheckpointError

# the original's layout (spec 01 §2.3, 02 §1.4): conv{i} = Sequential(Conv2d 3x3, LeakyReLU, Dropout2d),
# fc1 = Sequential(Linear(flat, 512), Tanh, Dropout), fc_final = Sequential(Linear(512, 1), Sigmoid)
CONVS = {"gender": (32, 64, 128, 128, 256, 256), "quality": (32, 64, 128, 128, 256),
         "age": (32, 64, 128, 128, 256, 256), "glass": (32, 64, 128, 128, 256)}
FLAT_256 = {"gender": 256 * 6 * 6, "quality": 256 * 4 * 12, "age": 256 * 4 * 12, "glass": 256 * 2 * 12}


def original_state(prop: str, seed: int = 0) -> dict:
    """A state dict with the original's key names and shapes at 256 px, random values."""
    g = torch.Generator().manual_seed(seed)
    state, cin = {}, 3
    for i, cout in enumerate(CONVS[prop], start=1):
        state[f"conv{i}.0.weight"] = torch.randn(cout, cin, 3, 3, generator=g)
        state[f"conv{i}.0.bias"] = torch.randn(cout, generator=g)
        cin = cout
    state["fc1.0.weight"] = torch.randn(512, FLAT_256[prop], generator=g) * 0.01
    state["fc1.0.bias"] = torch.randn(512, generator=g)
    state["fc_final.0.weight"] = torch.randn(1, 512, generator=g)
    state["fc_final.0.bias"] = torch.randn(1, generator=g)
    return state


@pytest.mark.parametrize("prop", PROPERTIES)
def test_original_file_loads_strictly_and_every_tensor_lands_where_mapped(prop, tmp_path):
    state = original_state(prop)
    assert arch_info(prop, 256).flatten == FLAT_256[prop]
    path = tmp_path / f"{prop}_model_0.pt"
    torch.save(state, path)
    model = load_original_filter_cnn(path, prop)
    assert not model.training
    ours = model.state_dict()
    mapping = original_filter_cnn_keys(prop)
    assert set(mapping) == set(state) and set(mapping.values()) == set(ours)
    for k, v in state.items():
        assert torch.equal(ours[mapping[k]], v), k
    assert original_filter_cnn_shapes(prop) == {k: tuple(v.shape) for k, v in state.items()}
    # the same forward as the original's layer order: conv blocks and pools, flatten, fc1, fc_final
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    r0, r1, c0, c1 = model.crop
    h = x[:, :, r0:r1, c0:c1]
    convs = iter(range(1, len(CONVS[prop]) + 1))
    for layer in LAYERS[prop]:
        if layer == "p":
            h = torch.nn.functional.max_pool2d(h, 2)
        else:
            i = next(convs)
            h = torch.nn.functional.leaky_relu(
                torch.nn.functional.conv2d(h, state[f"conv{i}.0.weight"], state[f"conv{i}.0.bias"]), 0.01)
    h = torch.tanh(h.reshape(2, -1) @ state["fc1.0.weight"].T + state["fc1.0.bias"])
    want = torch.sigmoid(h @ state["fc_final.0.weight"].T + state["fc_final.0.bias"]).squeeze(1)
    with torch.inference_mode():
        got = model(x)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


def test_foreign_or_incomplete_files_are_refused_naming_the_keys():
    state = original_state("quality")
    bad = dict(state, **{"conv9.0.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: conv9\.0\.weight"):
        convert_original_filter_cnn(bad, "quality")
    partial = {k: v for k, v in state.items() if k != "fc1.0.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys: fc1\.0\.bias"):
        load_original_filter_cnn(partial, "quality")
    gender = original_state("gender")                  # gender's six convs are not the quality net's five
    with pytest.raises(CheckpointError, match="unexpected keys: conv6"):
        load_original_filter_cnn(gender, "quality")
    wrong = dict(state, **{"fc1.0.weight": torch.zeros(512, 10)})
    with pytest.raises(CheckpointError, match=r"head\.0\.weight"):
        load_original_filter_cnn(wrong, "quality")


def test_our_own_files_are_not_mistaken_for_the_originals():
    ours = FilterCNN("glass", 256).state_dict()
    with pytest.raises(CheckpointError, match="unexpected keys: features"):
        convert_original_filter_cnn(ours, "glass")


def test_genforce_entry_is_read_weights_only_and_named(tmp_path):
    path = tmp_path / "stylegan_model.pth"
    torch.save({"generator": {"w": torch.ones(2)}, "discriminator": {"v": torch.zeros(1)}}, path)
    assert torch.equal(read_genforce(path)["w"], torch.ones(2))
    with pytest.raises(CheckpointError, match=r"no 'generator_smooth' entry; it has: \['discriminator', 'generator'\]"):
        read_genforce(path, "generator_smooth")
    with pytest.raises(CheckpointError, match="get it from"):
        read_genforce(tmp_path / "none.pth", hint="get it from the zoo")
