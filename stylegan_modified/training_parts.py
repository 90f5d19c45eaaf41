"""What each fine-tuning version trains, and its optimiser parameter groups (spec 04 §1.4, §5.2).

* v1 / v4: generator — only ``mapping.*`` (dense0–7 and ``label_weight``) trains, the
  synthesis network (and the ``w_avg`` / noise buffers) stays the base's; discriminator —
  only the last three layers (``layer12`` mbstd-conv, ``layer13`` dense, ``layer14`` head at
  256 px) train. One AdamW each, lr 1e-4 / 1e-4.
* v3: one AdamW with two groups — the generator's mapping (lr 1e-4) and the whole CVAE
  encoder (lr 1e-5); the property-score CNN and the gender CNN are frozen loss networks.

Trainable parameter counts at 256 px: v1 G 2,109,552, D 6,559,752; v4 G 2,109,488,
D 6,559,748; v3 mapping 2,113,704 + encoder 9,877,600.

:func:`parameter_groups` sets ``requires_grad`` accordingly (frozen parameters get no
gradient and so no weight decay) and returns the groups; :func:`make_optimizers` builds the
AdamW optimisers from them. Groups carry a ``name`` key (kept by torch optimisers).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .conditional import ConditionalDiscriminator, ConditionalGenerator

GENERATOR_TRAINABLE = ("mapping",)
DEFAULT_LR = {
    "v1": {"generator": 1e-4, "discriminator": 1e-4},
    "v4": {"generator": 1e-4, "discriminator": 1e-4},
    "v3": {"generator": 1e-4, "encoder": 1e-5},
}


def discriminator_trainable(d: ConditionalDiscriminator) -> tuple[str, str, str]:
    """The last three layers: the 4x4 mbstd conv, the dense layer and the label-aware head."""
    h = d.head_index
    return (f"layer{h - 2}", f"layer{h - 1}", f"layer{h}")


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def set_trainable(module: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """``requires_grad`` on exactly the parameters under ``prefixes`` (module paths); returns their names."""
    names = []
    for name, p in module.named_parameters():
        on = _under(name, prefixes)
        p.requires_grad_(on)
        if on:
            names.append(name)
    if not names:
        raise ValueError(f"no parameter of {type(module).__name__} lies under {list(prefixes)}")
    return names


def freeze(module: nn.Module) -> nn.Module:
    """All parameters frozen (loss networks such as the property-score and gender CNNs)."""
    return module.requires_grad_(False)


def trainable_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _group(name: str, module: nn.Module, prefixes: Sequence[str] | None, lr: float) -> dict:
    if prefixes is None:
        module.requires_grad_(True)
        params = list(module.parameters())
    else:
        set_trainable(module, prefixes)
        params = [p for p in module.parameters() if p.requires_grad]
    return {"name": name, "params": params, "lr": float(lr)}


def parameter_groups(version: str, *, generator: ConditionalGenerator,
                     discriminator: ConditionalDiscriminator | None = None, encoder: nn.Module | None = None,
                     lr: dict | None = None) -> dict[str, list[dict]]:
    """Optimiser name -> parameter groups for ``version`` ('v1', 'v4': ``generator`` and
    ``discriminator``; 'v3': one optimiser ``cvae`` with the mapping and encoder groups).

    ``lr`` overrides the rates: ``generator`` (the mapping's dense layers, whose stored weights
    carry GenForce's lr multiplier 0.01, so Adam moves them 100x slower relative to their size
    than unscaled weights), ``label_weight`` (when given and different: a group of its own),
    ``discriminator``, ``encoder``."""
    if version not in DEFAULT_LR:
        raise ValueError(f"parameter groups are defined for {', '.join(DEFAULT_LR)}, not {version!r}")
    rates = {**DEFAULT_LR[version], **(lr or {})}
    g_groups = [_group("generator.mapping", generator, GENERATOR_TRAINABLE, rates["generator"])]
    if rates.get("label_weight") is not None and float(rates["label_weight"]) != float(rates["generator"]):
        # the label embedding is an unscaled parameter (no lr multiplier): its own learning rate
        lw = generator.mapping.label_weight
        g_groups[0]["params"] = [p for p in g_groups[0]["params"] if p is not lw]
        g_groups.append({"name": "generator.label_weight", "params": [lw], "lr": float(rates["label_weight"])})
    if version == "v3":
        if encoder is None:
            raise ValueError("v3 needs the CVAE encoder")
        return {"cvae": g_groups + [_group("encoder", encoder, None, rates["encoder"])]}
    if discriminator is None:
        raise ValueError(f"{version} needs the discriminator")
    layers = discriminator_trainable(discriminator)
    d_group = _group(f"discriminator.{layers[0]}-{layers[-1][5:]}", discriminator, layers, rates["discriminator"])
    return {"generator": g_groups, "discriminator": [d_group]}


def make_optimizers(groups: dict[str, list[dict]], weight_decay: float = 0.01,
                    betas: tuple = (0.9, 0.999), eps: float = 1e-8) -> dict[str, torch.optim.AdamW]:
    """One AdamW per entry of :func:`parameter_groups` (defaults: the original's AdamW defaults)."""
    return {name: torch.optim.AdamW(gs, weight_decay=weight_decay, betas=betas, eps=eps) for name, gs in groups.items()}
