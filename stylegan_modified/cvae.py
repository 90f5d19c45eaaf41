"""FineTune-v3: the conditional-VAE arrangement around the v3 generator (spec 04 §5.1–5.2).

::

    x_real [B,3,R,R], label [B,7] -> CVAEEncoder -> mu, logvar [B, z_dim]
    z = mu + eps * exp(logvar / 2)                 (eps ~ N(0, I), from an explicit generator)
    x_gen = G_v3(z, label)                         (ConditionalGenerator, spec 'v3': E 24)
    p = property CNN(x_gen) [B,7]; g = gender CNN(x_gen) [B,1]   (frozen loss networks)

Encoder (kernel 4, stride 2, padding 1 with reflect padding, each conv followed by
LeakyReLU(0.01); no normalisation, no dropout; PyTorch default init). At 256 px:
``conv1..conv5`` 3->32->64->128->128->256 to 256x8x8 -> flatten 16,384 -> concat label ->
``fc1`` Linear(16,391 -> 512) + ELU -> concat label -> ``fc2_mu`` / ``fc2_var`` Linear(519 -> 512)
(``fc2_var`` gives the log-variance). 16 state-dict entries, 9,877,600 parameters. At other
resolutions the flatten is ``256 * (R/32)**2`` (128 px: 4,096).

:class:`FineTuneV3` registers ``CVAE_encoder``, ``stylegan_generator``,
``property_score_cnn``, ``gender_cnn`` in the original's order; only the first two are ever
saved (:meth:`FineTuneV3.checkpoint_states`). The gender CNN of stage 2 was trained on
[0, 1] images: ``gender_input='unit'`` (default) hands it ``(x + 1) / 2``; ``'signed'`` is
the original's (defect D8: the raw [-1, 1] output).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from cnn.property_score_cnn import to_signed_nchw

from .conditional import ConditionalGenerator, check_label

ENCODER_CHANNELS = (32, 64, 128, 128, 256)
ENCODER_HIDDEN = 512
LRELU_SLOPE = 0.01


class CVAEEncoder(nn.Module):
    """(image [B,3,R,R] in [-1, 1], label [B,L]) -> (mu, logvar), each [B, z_dim]."""

    def __init__(self, resolution: int = 256, label_dim: int = 7, z_dim: int = 512,
                 channels: tuple = ENCODER_CHANNELS, hidden: int = ENCODER_HIDDEN):
        super().__init__()
        n = len(channels)
        if resolution % (2 ** n) or resolution < 2 ** n:
            raise ValueError(f"the encoder halves the image {n} times: resolution must be a multiple of {2 ** n}, "
                             f"got {resolution}")
        self.resolution, self.label_dim, self.z_dim = int(resolution), int(label_dim), int(z_dim)
        cin = 3
        for i, cout in enumerate(channels):
            self.add_module(f"conv{i + 1}", nn.Sequential(
                nn.Conv2d(cin, cout, 4, stride=2, padding=1, padding_mode="reflect"), nn.LeakyReLU(LRELU_SLOPE)))
            cin = cout
        self.n_convs = n
        self.flatten = cin * (resolution // 2 ** n) ** 2
        self.fc1 = nn.Sequential(nn.Linear(self.flatten + label_dim, hidden), nn.ELU())
        self.fc2_mu = nn.Linear(hidden + label_dim, z_dim)
        self.fc2_var = nn.Linear(hidden + label_dim, z_dim)

    def forward(self, images: torch.Tensor, label) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(f"encoder input must be [B, 3, {r}, {r}], got {tuple(images.shape)}")
        label = check_label(label, images.shape[0], self.label_dim, images.device)
        x = images.to(torch.float32)
        for i in range(self.n_convs):
            x = getattr(self, f"conv{i + 1}")(x)
        h = self.fc1(torch.cat([x.flatten(1), label], dim=1))
        h = torch.cat([h, label], dim=1)
        return self.fc2_mu(h), self.fc2_var(h)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + eps * exp(logvar / 2), eps ~ N(0, I) drawn from ``generator``."""
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + eps * torch.exp(0.5 * logvar)


class FineTuneV3(nn.Module):
    """Encoder + v3 generator (+ the frozen loss networks, optional here)."""

    def __init__(self, encoder: CVAEEncoder, generator: ConditionalGenerator, property_cnn: nn.Module | None = None,
                 gender_cnn: nn.Module | None = None, gender_input: str = "unit"):
        super().__init__()
        if gender_input not in ("unit", "signed"):
            raise ValueError(f"gender_input must be 'unit' ([0, 1], the CNN's training range) or 'signed' "
                             f"(the original's [-1, 1]), got {gender_input!r}")
        if encoder.label_dim != generator.spec.label_dim or encoder.z_dim != generator.cfg.z_dim:
            raise ValueError(f"encoder (labels {encoder.label_dim}, z {encoder.z_dim}) does not fit the generator "
                             f"(labels {generator.spec.label_dim}, z {generator.cfg.z_dim})")
        self.CVAE_encoder = encoder
        self.stylegan_generator = generator
        self.property_score_cnn = property_cnn
        self.gender_cnn = gender_cnn
        self.gender_input = gender_input

    def forward(self, images: torch.Tensor, label, *, generator: torch.Generator | None = None,
                gen_label=None, eps: torch.Tensor | None = None, w_moving_decay: float = 0.995) -> dict:
        """``mu, logvar, z, image`` and, when the loss networks are attached, ``property`` [B,7]
        and ``gender`` [B]. The generator runs without style mixing, with its stored noise.

        ``gen_label``: the generator's label when it differs from the encoder's (default: the
        same, as the original); ``eps``: the reparameterisation noise (default: drawn from
        ``generator``)."""
        mu, logvar = self.CVAE_encoder(images, label)
        z = reparameterize(mu, logvar, generator) if eps is None else mu + eps.to(mu) * torch.exp(0.5 * logvar)
        gl = label if gen_label is None else gen_label
        image = self.stylegan_generator(z, gl, style_mixing_prob=0.0, randomize_noise=False,
                                        w_moving_decay=w_moving_decay)["image"]
        out = {"mu": mu, "logvar": logvar, "z": z, "image": image}
        out.update(self.judge(image))
        return out

    def judge(self, image: torch.Tensor) -> dict:
        """The attached loss networks on generated images: ``property`` [B, 7], ``gender`` [B]."""
        out = {}
        if self.property_score_cnn is not None:
            out["property"] = self.property_score_cnn(image)
        if self.gender_cnn is not None:
            out["gender"] = self.gender_cnn((image + 1.0) / 2.0 if self.gender_input == "unit" else image).reshape(-1)
        return out

    def checkpoint_states(self) -> dict:
        """The two state dicts the original saves per passing epoch (``…_gen.pth``, ``…_enc.pth``)."""
        return {"generator": self.stylegan_generator.state_dict(), "encoder": self.CVAE_encoder.state_dict()}


@torch.inference_mode()
def encode(encoder: CVAEEncoder, images, label, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) for images (uint8 NCHW or float [-1, 1]) in eval mode; the mode is restored."""
    images = to_signed_nchw(images)
    label = check_label(label, images.shape[0], encoder.label_dim)
    was = encoder.training
    encoder.eval()
    try:
        step = batch_size or max(len(images), 1)
        parts = [encoder(images[i:i + step], label[i:i + step]) for i in range(0, len(images), step)]
    finally:
        encoder.train(was)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def z_candidates_from_posterior(mu, logvar, seed: int) -> torch.Tensor:
    """Test latents from encoder outputs: z_j = mu_j + eps_j * sigma_j with a seeded eps (spec 04 §5.5)."""
    mu, logvar = torch.as_tensor(mu, dtype=torch.float32), torch.as_tensor(logvar, dtype=torch.float32)
    with torch.inference_mode():
        return reparameterize(mu, logvar, torch.Generator().manual_seed(int(seed)))
