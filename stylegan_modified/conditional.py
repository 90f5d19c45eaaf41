"""Property-conditioned StyleGAN (FineTune-v1 / v2 / v3 / v4, spec 04 §1.2–1.3).

Built on the core (``stylegan``) by composition:

* :class:`ConditionalMapping` is the core's ``MappingNetwork`` with one hook filled in:
  ``embed(z, label)`` returns ``concat(z, label @ label_weight)``, which the core then
  pixel-normalises over all ``z_dim + E`` entries and feeds to ``dense0`` (whose weight
  scale uses that real fan-in: √2/√528·0.01 for v1). ``label_weight`` ([L, E], no bias,
  no scaling, ``randn`` init) is registered after the dense layers, as in the original.
* :class:`ConditionalGenerator` is the core generator with that mapping. The label is
  mandatory (shape exactly [B, L], float64 cast to float32); style mixing draws the second
  latent with the same label.
* :class:`ConditionalDiscriminator` is the core discriminator whose last dense layer takes
  ``concat(features, label)`` (the core's ``head_in_extra`` hook); minibatch-std group 16.

One class each, for any label count; :data:`VERSIONS` holds the original's presets:

=======  ===========  ====  ====  ======================  =========================
version  labels       L     E     G ``label_weight`` /     D ``layer14.weight``
                                  ``dense0.weight``
=======  ===========  ====  ====  ======================  =========================
v1       P7           7     16    (7, 16) / (512, 528)    (1, 519)
v2       P7           7     16    (7, 16) / (512, 528)    —
v3       P7           7     24    (7, 24) / (512, 536)    —
v4       P3           3     16    (3, 16) / (512, 528)    (1, 515)
=======  ===========  ====  ====  ======================  =========================

The ``style_mixing_prob`` of a preset is the class default of the original's ``forward``
(v1 0.9, the others 0); it only acts in training mode, and training loops should pass the
probability they want explicitly. All inference helpers here use eval semantics (no style
mixing, no ``w_avg`` update) under ``torch.inference_mode()``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from cnn.property_score_cnn import P3, P7
from stylegan.discriminator import DiscriminatorConfig, StyleGANDiscriminator
from stylegan.generator import GeneratorConfig, MappingNetwork, StyleGANGenerator, postprocess

CONDITIONAL_MBSTD_GROUP = 16


@dataclass(frozen=True)
class ConditionalSpec:
    """What a conditional model is conditioned on: label names (their order = label columns),
    the embedding width E, and the forward's default style-mixing probability."""
    label_names: tuple
    embed_dim: int = 16
    style_mixing_prob: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "label_names", tuple(self.label_names))
        if not self.label_names or len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"label_names must be distinct and non-empty, got {self.label_names}")
        if int(self.embed_dim) < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")

    @property
    def label_dim(self) -> int:
        return len(self.label_names)


VERSIONS = {
    "v1": ConditionalSpec(P7, 16, 0.9),
    "v2": ConditionalSpec(P7, 16, 0.0),
    "v3": ConditionalSpec(P7, 24, 0.0),
    "v4": ConditionalSpec(P3, 16, 0.0),
}


def get_spec(spec: ConditionalSpec | str) -> ConditionalSpec:
    if isinstance(spec, ConditionalSpec):
        return spec
    if spec not in VERSIONS:
        raise ValueError(f"unknown conditional version {spec!r}; expected one of {', '.join(VERSIONS)} "
                         f"or a ConditionalSpec")
    return VERSIONS[spec]


def check_label(label, batch: int, label_dim: int, device=None) -> torch.Tensor:
    """The label as float32 [batch, label_dim]; anything else is a ValueError (there is no label-free path)."""
    if label is None:
        raise ValueError(f"this model is conditional: a label of shape [{batch}, {label_dim}] is required")
    label = torch.as_tensor(label)
    if label.ndim != 2 or tuple(label.shape) != (batch, label_dim):
        raise ValueError(f"label must have shape [{batch}, {label_dim}], got {tuple(label.shape)}")
    return label.to(dtype=torch.float32, device=device)


class ConditionalMapping(MappingNetwork):
    """Mapping network whose input is ``concat(z, label @ label_weight)`` (see the module docstring)."""

    def __init__(self, z_dim: int, label_dim: int, embed_dim: int, hidden_dim: int, out_dim: int,
                 num_layers: int, lr_mul: float):
        super().__init__(z_dim + embed_dim, hidden_dim, out_dim, num_layers, lr_mul)
        self.z_dim = z_dim
        self.label_dim = label_dim
        self.embed_dim = embed_dim
        self.label_weight = nn.Parameter(torch.randn(label_dim, embed_dim))

    def embed(self, z: torch.Tensor, label) -> tuple[torch.Tensor, dict]:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [B, {self.z_dim}], got {tuple(z.shape)}")
        label = check_label(label, z.shape[0], self.label_dim, z.device)
        e = label @ self.label_weight
        return torch.cat([z.to(torch.float32), e], dim=1), {"label": label, "embedding": e}


class ConditionalGenerator(StyleGANGenerator):
    """The core generator with a :class:`ConditionalMapping`; ``forward(z, label)``."""

    def __init__(self, cfg: GeneratorConfig | None = None, spec: ConditionalSpec | str = "v1"):
        cfg = cfg or GeneratorConfig()
        spec = get_spec(spec)
        mapping = ConditionalMapping(cfg.z_dim, spec.label_dim, spec.embed_dim, cfg.mapping_fmaps, cfg.w_dim,
                                     cfg.mapping_layers, cfg.mapping_lr_mul)
        super().__init__(cfg, mapping=mapping)
        self.spec = spec

    @property
    def label_names(self) -> tuple:
        return self.spec.label_names

    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    def forward(self, z: torch.Tensor, label: torch.Tensor, *, style_mixing_prob: float | None = None,
                **kwargs) -> dict:
        """As the core's forward, with a mandatory label; ``style_mixing_prob`` defaults to the spec's."""
        p = self.spec.style_mixing_prob if style_mixing_prob is None else style_mixing_prob
        return super().forward(z, label, style_mixing_prob=p, **kwargs)

    def render(self, z, label) -> torch.Tensor:
        """Images [-1, 1] for (z, label) with eval semantics (the generation-test protocol)."""
        return synthesize(self, z, label)


class ConditionalDiscriminator(StyleGANDiscriminator):
    """The core discriminator; the final dense layer sees ``concat(features, label)``.

    ``mbstd_group_size`` (16, the original's module constant) replaces the config's value;
    pass ``None`` to keep the config's."""

    def __init__(self, cfg: DiscriminatorConfig | None = None, spec: ConditionalSpec | str = "v1",
                 mbstd_group_size: int | None = CONDITIONAL_MBSTD_GROUP):
        cfg = cfg or DiscriminatorConfig()
        if mbstd_group_size is not None:
            cfg = dataclasses.replace(cfg, mbstd_group_size=int(mbstd_group_size))
        spec = get_spec(spec)
        super().__init__(cfg, head_in_extra=spec.label_dim)
        self.spec = spec

    @property
    def label_names(self) -> tuple:
        return self.spec.label_names

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        f = self.features(image)
        label = check_label(label, f.shape[0], self.spec.label_dim, f.device)
        return self.head(torch.cat([f, label], dim=1))


def build_generator(cfg: GeneratorConfig | None = None, spec: ConditionalSpec | str = "v1",
                    seed: int = 0) -> ConditionalGenerator:
    """A freshly initialised conditional generator; the initialisation is drawn from ``seed``
    without touching the global RNG state."""
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        return ConditionalGenerator(cfg, spec)


def build_discriminator(cfg: DiscriminatorConfig | None = None, spec: ConditionalSpec | str = "v1",
                        seed: int = 0, mbstd_group_size: int | None = CONDITIONAL_MBSTD_GROUP
                        ) -> ConditionalDiscriminator:
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        return ConditionalDiscriminator(cfg, spec, mbstd_group_size)


# ------------------------------------------------------------------------------------ inference

def batch_ranges(n: int, batch_size: int | None) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering range(n) in steps of ``batch_size`` (None: one batch)."""
    step = max(int(batch_size or n), 1)
    return [(i, min(i + step, n)) for i in range(0, n, step)]


@torch.inference_mode()
def synthesize(g: ConditionalGenerator, z, label, *, batch_size: int | None = None, trunc_psi: float = 1.0,
               trunc_layers: int = 0, randomize_noise: bool = False, noise_seed: int | None = None) -> torch.Tensor:
    """Images [N, 3, R, R] in [-1, 1] for z [N, z_dim] and labels [N, L] (numpy or torch, any float dtype).

    Eval semantics whatever the module's mode: no style mixing, ``w_avg`` untouched, the
    stored noise maps unless ``randomize_noise`` (then seeded by ``noise_seed``, drawn in
    batch order). Runs in batches of ``batch_size`` (None: one batch)."""
    dev = g.truncation.w_avg.device
    z = torch.as_tensor(z).to(dtype=torch.float32, device=dev)
    label = check_label(label, z.shape[0], g.spec.label_dim, dev)
    gen = torch.Generator(device=dev).manual_seed(int(noise_seed or 0)) if randomize_noise else None
    out = []
    for a, b in batch_ranges(len(z), batch_size):
        wp = g.truncation(g.mapping(z[a:b], label[a:b])["w"], trunc_psi, trunc_layers)
        out.append(g.synthesis(wp, randomize_noise, gen)["image"])
    return torch.cat(out) if out else torch.zeros(0, g.cfg.image_channels, g.cfg.resolution, g.cfg.resolution)


@torch.inference_mode()
def map_to_w(g: ConditionalGenerator, z, label) -> torch.Tensor:
    """w [N, w_dim] for (z, label) (eval semantics)."""
    z = torch.as_tensor(z).to(dtype=torch.float32, device=g.truncation.w_avg.device)
    return g.mapping(z, label)["w"]


@torch.inference_mode()
def discriminate(d: ConditionalDiscriminator, images, label, *, batch_size: int | None = None) -> torch.Tensor:
    """Raw scores [N, 1] (eval semantics; batches must respect the minibatch-std grouping)."""
    images = torch.as_tensor(images).to(torch.float32)
    label = check_label(label, images.shape[0], d.spec.label_dim)
    return torch.cat([d(images[a:b], label[a:b]) for a, b in batch_ranges(len(images), batch_size)])


def sample_uint8(g: ConditionalGenerator, z, label, **kw) -> np.ndarray:
    """uint8 NHWC RGB images (GenForce post-processing) for (z, label)."""
    return postprocess(synthesize(g, z, label, **kw))


__all__ = ["CONDITIONAL_MBSTD_GROUP", "batch_ranges", "ConditionalDiscriminator", "ConditionalGenerator", "ConditionalMapping",
           "ConditionalSpec", "VERSIONS", "build_discriminator", "build_generator", "check_label", "discriminate",
           "get_spec", "map_to_w", "sample_uint8", "synthesize"]
