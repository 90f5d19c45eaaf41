"""Independent attribute evaluator for the synthface world.

A small CNN trained only on *rendered* images with their true parameters (never
on generator output). It predicts every continuous world parameter (standardised)
and the probability of every binary one. Later stages use it as the independent
judge of generated images: it takes no part in any generator training.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from stylegan.generator import to_signed_tensor


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


class AttributeNet(nn.Module):
    """[-1, 1] RGB image (128x128; other sizes are resized) -> (continuous [B, C], binary logits [B, K]).

    Light on purpose (about 0.15 GMAC per image) so it trains on a CPU in minutes: a
    stride-2 5x5 stem, four conv-BN-ReLU-pool blocks to 4x4, then two dense layers.
    """

    def __init__(self, n_continuous: int, n_binary: int, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 5, stride=2, padding=2), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            _block(width, 48), _block(48, 96), _block(96, 128), _block(128, 128))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * 16, 256), nn.ReLU(inplace=True),
                                  nn.Linear(256, n_continuous + n_binary))
        self.n_continuous = n_continuous

    def forward(self, x):
        if x.shape[-1] != 128:
            x = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False, antialias=True)
        out = self.head(self.features(x))
        return out[:, :self.n_continuous], out[:, self.n_continuous:]


@dataclass
class EvaluatorSpec:
    continuous: list
    binary: list
    mean: np.ndarray
    std: np.ndarray
    width: int = 32

    def to_state(self) -> dict:
        st = {"continuous": ",".join(self.continuous), "binary": ",".join(self.binary),
              "mean": torch.from_numpy(self.mean), "std": torch.from_numpy(self.std)}
        if self.width != 32:
            st["width"] = torch.tensor(self.width)
        return st

    @classmethod
    def from_state(cls, st: dict) -> "EvaluatorSpec":
        return cls(st["continuous"].split(","), [b for b in st["binary"].split(",") if b],
                   st["mean"].numpy(), st["std"].numpy(), int(st["width"]) if "width" in st else 32)


class Evaluator:
    """Wraps the trained net: ``predict(images_uint8_nhwc)`` -> dict name -> float32 array."""

    def __init__(self, net: AttributeNet, spec: EvaluatorSpec):
        self.net = net.eval()
        self.spec = spec

    @torch.inference_mode()
    def predict(self, images, batch_size: int = 128) -> dict:
        outs_c, outs_b = [], []
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size]
            x = to_signed_tensor(x) if not torch.is_tensor(x) or x.dtype == torch.uint8 else x.float()
            c, b = self.net(x)
            outs_c.append(c.numpy()); outs_b.append(torch.sigmoid(b).numpy())
        c = np.concatenate(outs_c) * self.spec.std + self.spec.mean
        b = np.concatenate(outs_b)
        res = {n: c[:, i].astype(np.float32) for i, n in enumerate(self.spec.continuous)}
        res.update({n: b[:, i].astype(np.float32) for i, n in enumerate(self.spec.binary)})
        return res

    def state(self) -> dict:
        return {"net": self.net.state_dict(), "spec": self.spec.to_state()}

    @classmethod
    def from_state(cls, st: dict) -> "Evaluator":
        spec = EvaluatorSpec.from_state(st["spec"])
        net = AttributeNet(len(spec.continuous), len(spec.binary), width=spec.width)
        net.load_state_dict(st["net"], strict=True)
        return cls(net, spec)


def train_evaluator(sample_fn, continuous: list, binary: list, *, steps: int = 3000, batch_size: int = 64,
                    lr: float = 2e-3, seed: int = 0, width: int = 32,
                    show_progress: bool = True) -> tuple[Evaluator, list]:
    """``sample_fn(step, batch_size) -> (uint8 NHWC images, dict name -> array)`` of *rendered* faces."""
    torch.manual_seed(seed)
    imgs, lab = sample_fn(10**9, 2048)          # a stream outside the training steps, for the label statistics
    mean = np.array([lab[n].mean() for n in continuous], dtype=np.float32)
    std = np.array([lab[n].std() + 1e-6 for n in continuous], dtype=np.float32)
    spec = EvaluatorSpec(list(continuous), list(binary), mean, std, width)
    net = AttributeNet(len(continuous), len(binary), width=width).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    log = []
    for step in tqdm(range(steps), desc="evaluator", disable=not show_progress):
        imgs, lab = sample_fn(step, batch_size)
        x = to_signed_tensor(imgs)
        yc = torch.from_numpy((np.stack([lab[n] for n in continuous], 1).astype(np.float32) - mean) / std)
        yb = torch.from_numpy(np.stack([lab[n] for n in binary], 1).astype(np.float32)) if binary else None
        pc, pb = net(x)
        loss = F.smooth_l1_loss(pc, yc, beta=0.5)
        if binary:
            loss = loss + F.binary_cross_entropy_with_logits(pb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0:
            log.append({"step": step, "loss": loss.item()})
    return Evaluator(net, spec), log


def fidelity_scores(pred: dict, truth: dict, continuous: list, binary: list) -> dict:
    """Pearson r per continuous parameter, accuracy (cut 0.5) per binary one."""
    out = {}
    for n in continuous:
        out[n] = {"pearson_r": float(np.corrcoef(pred[n], truth[n])[0, 1])}
    for n in binary:
        out[n] = {"accuracy": float(np.mean((pred[n] >= 0.5) == (np.asarray(truth[n]) >= 0.5)))}
    return out
