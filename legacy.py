"""The one reader of foreign files: checkpoints made outside this project, turned into our models.

* **FaceXFormer** (the authors' ``ckpts/model.pt``): weights under ``state_dict_backbone``, read
  weights-only (full unpickling only on explicit trust), loaded strictly into
  :class:`segmentation.facexformer.FaceXFormer`, whose names match the file's.
* **GenForce StyleGAN** files (``{'generator': state_dict, 'discriminator': state_dict, ...}``):
  :func:`read_genforce` returns one entry; our StyleGAN modules use GenForce's names, so the entry
  loads strictly with no renaming.
* **The original project's filter CNNs** (gender / quality / age / glasses ``*_model_{k}.pt``, plain
  state dicts): the original named each conv block ``conv{i}`` (``Sequential(Conv2d, LeakyReLU,
  Dropout2d)``, pools as separate parameter-free modules), the hidden layer ``fc1``
  (``Sequential(Linear, Tanh, Dropout)``) and the output ``fc_final`` (``Sequential(Linear,
  Sigmoid)``); :class:`cnn.filter_cnns.FilterCNN` keeps the same layers in ``features`` and ``head``.
  :func:`original_filter_cnn_keys` is the explicit name mapping and
  :func:`load_original_filter_cnn` loads such a file strictly through it.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Mapping

import torch

from cnn.filter_cnns import LAYERS, FilterCNN
from pipeline.checkpoint import (CheckpointError, load_state_dict_strict, read_checkpoint, save_checkpoint,
                                 select_entry)
from segmentation.facexformer import FaceXFormer, check_facexformer_layout, facexformer_from_state

REPO_ROOT = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------- GenForce


def read_genforce(path: str | os.PathLike, key: str = "generator", hint: str = "") -> dict:
    """The ``key`` entry (a state_dict in GenForce's names) of a GenForce checkpoint, read weights-only."""
    return select_entry(read_checkpoint(path, missing_hint=hint), key, path)


# ---------------------------------------------------------------------------------------------- original filter CNNs


def original_filter_cnn_keys(prop: str) -> dict[str, str]:
    """``{original key: our key}`` for one of the original's filter CNNs.

    The i-th conv of the original (``conv{i}.0``, counted from 1) is the i-th ``Conv2d`` of our
    ``features`` (each conv block there is Conv2d, LeakyReLU, Dropout2d; each pool one module);
    ``fc1.0`` is ``head.0`` and ``fc_final.0`` is ``head.3``."""
    if prop not in LAYERS:
        raise ValueError(f"unknown filter CNN {prop!r}; expected one of {', '.join(LAYERS)}")
    mapping, index, conv = {}, 0, 0
    for layer in LAYERS[prop]:
        if layer == "p":
            index += 1
            continue
        conv += 1
        for p in ("weight", "bias"):
            mapping[f"conv{conv}.0.{p}"] = f"features.{index}.{p}"
        index += 3
    for p in ("weight", "bias"):
        mapping[f"fc1.0.{p}"] = f"head.0.{p}"
        mapping[f"fc_final.0.{p}"] = f"head.3.{p}"
    return mapping


def convert_original_filter_cnn(state: Mapping[str, torch.Tensor], prop: str, what: str = "state_dict") -> dict:
    """The original's state dict under our names; a key outside the mapping, or a mapped key that is
    absent, is a :class:`CheckpointError` naming it."""
    mapping = original_filter_cnn_keys(prop)
    unexpected = sorted(k for k in state if k not in mapping)
    missing = sorted(k for k in mapping if k not in state)
    if unexpected or missing:
        parts = ([f"unexpected keys: {', '.join(unexpected)}"] if unexpected else []) + \
                ([f"missing keys: {', '.join(missing)}"] if missing else [])
        raise CheckpointError(f"{what} is not the original's {prop} CNN ({'; '.join(parts)})")
    return {mapping[k]: v for k, v in state.items()}


def load_original_filter_cnn(source: str | os.PathLike | Mapping[str, torch.Tensor], prop: str,
                             resolution: int = 256, width=1.0, padding: int = 0) -> FilterCNN:
    """A :class:`FilterCNN` holding the original's weights (a ``*_model_{k}.pt`` file or its state dict),
    loaded strictly (shapes checked) through :func:`original_filter_cnn_keys`; eval mode."""
    if isinstance(source, Mapping):
        state, what = source, f"original {prop} CNN state_dict"
    else:
        state, what = read_checkpoint(source), f"original {prop} CNN file {source}"
    model = FilterCNN(prop, resolution, width, padding)
    load_state_dict_strict(model, convert_original_filter_cnn(state, prop, what), what=what)
    return model.eval()


def original_filter_cnn_shapes(prop: str, resolution: int = 256, width=1.0, padding: int = 0) -> dict[str, tuple]:
    """``{original key: shape}`` of the original's CNN of ``prop`` (for checks and tests)."""
    ours = {k: tuple(v.shape) for k, v in FilterCNN(prop, resolution, width, padding).state_dict().items()}
    return {orig: ours[k] for orig, k in original_filter_cnn_keys(prop).items()}


# ---------------------------------------------------------------------------------------------- FaceXFormer

FACEXFORMER_KEY = "state_dict_backbone"
DEFAULT_FACEXFORMER = "checkpoints/celeba256/facexformer.pt"
CHECKPOINT_KEY = FACEXFORMER_KEY
DEFAULT_CHECKPOINT = DEFAULT_FACEXFORMER
CHECKPOINT_HINT = (
    "Get the FaceXFormer checkpoint from the FaceXFormer authors' model hub (file 'ckpts/model.pt' of "
    f"their model repository) and save it as {DEFAULT_FACEXFORMER} (or point the profile's "
    "segmentation.facexformer_checkpoint at it). Nothing is downloaded at run time.")


def _refused_by_weights_only(exc: Exception) -> str | None:
    """The reason torch's weights-only unpickler gave, or None if ``exc`` is another failure."""
    text = str(exc)
    if not isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" not in text:
        return None
    detail = [ln.strip() for ln in text.splitlines() if "Unsupported global" in ln or "WeightsUnpickler" in ln]
    return detail[0].split(" was not an allowed global")[0] if detail else "non-tensor objects"


def read_facexformer_checkpoint(path: str | os.PathLike, *, trust_checkpoint: bool = False,
                                hint: str = CHECKPOINT_HINT) -> dict:
    """The ``state_dict_backbone`` entry of a FaceXFormer checkpoint file.

    The file is read with ``weights_only=True``. If it also pickles Python objects that this
    safe loader refuses, a :class:`CheckpointError` explains the choice: pass
    ``trust_checkpoint=True`` (full unpickling, which can run code stored in the file — only for
    a file from a source you trust), or convert it once with :func:`convert_checkpoint` into a
    weights-only file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"FaceXFormer checkpoint not found: {path}\n{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        refused = _refused_by_weights_only(exc)
        if refused is None:
            raise CheckpointError(f"cannot read FaceXFormer checkpoint {path}: {exc}") from exc
        if not trust_checkpoint:
            weights_copy = path.with_suffix(".weights.pt")
            raise CheckpointError(
                f"cannot read FaceXFormer checkpoint {path} safely: besides tensors it stores Python objects that "
                f"torch.load(weights_only=True) refuses ({refused}). Loading it fully would unpickle arbitrary "
                "objects, which can run code. If you trust the file, either load it with trust_checkpoint=True "
                "(profile: segmentation.trust_checkpoint), or convert it once into a weights-only file: "
                "python -c \"from legacy import convert_facexformer_checkpoint as convert_checkpoint; "
                f"convert_checkpoint('{path}', '{weights_copy}')\" and use that file.") from exc
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)   # explicit opt-in
        except Exception as exc2:
            raise CheckpointError(f"cannot read FaceXFormer checkpoint {path}: {exc2}") from exc2
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"FaceXFormer checkpoint {path} holds a {type(ckpt).__name__}, expected a dict "
                              f"with a '{CHECKPOINT_KEY}' entry")
    state = select_entry(ckpt, CHECKPOINT_KEY, path)
    if not isinstance(state, dict):
        raise CheckpointError(f"'{CHECKPOINT_KEY}' of {path} is a {type(state).__name__}, expected a state_dict")
    return state


def load_facexformer(path: str | os.PathLike = DEFAULT_CHECKPOINT, *, device: str | torch.device = "cpu",
                     trust_checkpoint: bool = False, hint: str = CHECKPOINT_HINT) -> FaceXFormer:
    """Build :class:`FaceXFormer`, load the checkpoint strictly, return it in ``eval()`` mode.

    Relative paths are taken from the repository root. Any missing, unexpected or mis-shaped
    key is a :class:`CheckpointError` that names it. See :func:`read_facexformer_checkpoint`
    for ``trust_checkpoint``.
    """
    path = Path(path)
    if not path.is_absolute():
        path = REPO_ROOT / path
    state = read_facexformer_checkpoint(path, trust_checkpoint=trust_checkpoint, hint=hint)
    return facexformer_from_state(state, what=f"FaceXFormer checkpoint {path}").to(device).eval()


def convert_facexformer_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rewrite a trusted FaceXFormer checkpoint as ``{'state_dict_backbone': tensors}`` only.

    Reads ``src`` with full unpickling (so only for a file you trust), checks that the weights
    load strictly, and writes ``dst`` atomically; ``dst`` then loads with ``weights_only=True``.
    """
    state = read_facexformer_checkpoint(src, trust_checkpoint=True)
    check_facexformer_layout(state, f"FaceXFormer checkpoint {src}")
    save_checkpoint({CHECKPOINT_KEY: {k: v.detach().clone() for k, v in state.items()}}, dst)
