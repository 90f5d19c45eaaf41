"""FaceXFormer face parser, rebuilt with the official parameter names and shapes.

The network (spec ``03_reference_models.md`` §2) is a torchvision Swin-B encoder whose four
stage outputs are projected to 256 channels, resized to the 56x56 grid of the first stage and
fused by a 1x1 convolution; a two-way transformer decoder then lets 18 learned task tokens
(7 for the face-analysis heads, 11 for the parsing classes) and the 3,136 image tokens attend
to each other. The parsing logits are the dot products of the upsampled image features
(32 channels, 224x224) with one 32-d vector per mask token.

The state_dict matches the authors' checkpoint exactly (505 entries, 91,985,943 parameters),
so ``legacy.load_facexformer`` (the reader of the authors' file) loads it strictly with no renaming. The Swin-B encoder is built
with ``weights=None``: nothing is ever downloaded.

Public names used by stage 3: :class:`FaceXFormer`, :func:`facexformer_from_state`,
:func:`parse_logits_to_map`, :func:`colorize_parsing`, :func:`overlay_parsing`.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from pipeline.vocabulary import CLASS_NAMES, PALETTE
from pipeline.checkpoint import CheckpointError, load_state_dict_strict

INPUT_SIZE = 224
NUM_CLASSES = 11

# The face-analysis heads, in token order (the 11 parsing tokens follow them), and their widths.
TASK_HEADS = (("landmarks", 136), ("pose", 3), ("attribute", 40), ("visibility", 29),
              ("age", 8), ("gender", 2), ("race", 5))
# Keys of the dict returned by FaceXFormer.forward.
OUTPUT_KEYS = ("segmentation", "landmarks", "headpose", "attribute", "visibility", "age", "gender", "race")

STATE_DICT_ENTRIES = 505
PARAMETER_COUNT = 91_985_943

_STAGE_WIDTHS = (128, 256, 512, 1024)   # Swin-B stage outputs
_STAGE_INDICES = (1, 3, 5, 7)           # their positions in swin_b().features
_DIM = 256                              # decoder width


# ----------------------------------------------------------------------------------------------
# decoder building blocks


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of an NCHW tensor (population variance, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        var = centred.square().mean(dim=1, keepdim=True)
        return centred / torch.sqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


class HeadMLP(nn.Module):
    """``depth`` linear layers (``layers.0`` … ``layers.{depth-1}``) with ReLU between them."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, depth: int = 3):
        super().__init__()
        widths = [d_in] + [d_hidden] * (depth - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, lin in enumerate(self.layers):
            x = lin(x)
            if i < last:
                x = F.relu(x)
        return x


class FeedForward(nn.Module):
    """Token MLP of the decoder blocks: ``lin1`` → ReLU → ``lin2``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class MultiHeadAttention(nn.Module):
    """Multi-head attention whose projections may narrow the width (``dim // downsample``)."""

    def __init__(self, dim: int, heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        if inner % heads:
            raise ValueError(f"attention width {inner} is not divisible by {heads} heads")
        self.heads = heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        out = weights @ v                                   # [B, heads, Nq, d_head]
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class TwoWayBlock(nn.Module):
    """One decoder layer: token self-attention, token→image, MLP, image→token (each + LayerNorm).

    In the first layer (``first=True``) the self-attention sees the tokens without their
    positional embedding and its output replaces the tokens (no residual).
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int, first: bool):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = MultiHeadAttention(dim, heads, downsample=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = MultiHeadAttention(dim, heads, downsample=2)
        self.first = first

    def forward(self, tokens, image, token_pe, image_pe):
        if self.first:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            t = tokens + token_pe
            tokens = tokens + self.self_attn(t, t, tokens)
        tokens = self.norm1(tokens)

        image_k = image + image_pe
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(tokens + token_pe, image_k, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        image = self.norm4(image + self.cross_attn_image_to_token(image_k, tokens + token_pe, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks, then a last token→image attention + residual + LayerNorm."""

    def __init__(self, dim: int = _DIM, depth: int = 2, heads: int = 8, mlp_dim: int = 2048):
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(dim, heads, mlp_dim, first=(i == 0)) for i in range(depth))
        self.final_attn_token_to_image = MultiHeadAttention(dim, heads, downsample=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor):
        """image, image_pe: [B, C, H, W]; tokens [B, N, C] (also their positional embedding)."""
        image = image.flatten(2).transpose(1, 2)            # [B, HW, C]
        image_pe = image_pe.flatten(2).transpose(1, 2)
        token_pe, x = tokens, tokens
        for layer in self.layers:
            x, image = layer(x, image, token_pe, image_pe)
        x = self.norm_final_attn(x + self.final_attn_token_to_image(x + token_pe, image + image_pe, image))
        return x, image


class FaceDecoder(nn.Module):
    """Task tokens + two-way transformer + the seven task heads and the parsing head."""

    def __init__(self, dim: int = _DIM):
        super().__init__()
        self.transformer = TwoWayTransformer(dim)
        for name, _ in TASK_HEADS:
            setattr(self, f"{name}_token", nn.Embedding(1, dim))
        self.mask_tokens = nn.Embedding(NUM_CLASSES, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetwork_mlps = HeadMLP(dim, dim, dim // 8)
        for name, width in TASK_HEADS:
            setattr(self, f"{name}_prediction_head", HeadMLP(dim, dim, width))

    def task_tokens(self) -> torch.Tensor:
        """The 18 learned tokens [18, C]: the seven task tokens, then the 11 mask tokens."""
        parts = [getattr(self, f"{name}_token").weight for name, _ in TASK_HEADS]
        return torch.cat(parts + [self.mask_tokens.weight], dim=0)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = image.shape
        tokens = self.task_tokens().unsqueeze(0).expand(b, -1, -1)
        tokens, image = self.transformer(image, image_pe.expand(b, -1, -1, -1), tokens)

        out = {}
        for i, (name, _) in enumerate(TASK_HEADS):
            out["headpose" if name == "pose" else name] = getattr(self, f"{name}_prediction_head")(tokens[:, i])
        features = self.output_upscaling(image.transpose(1, 2).reshape(b, c, h, w))   # [B, 32, 4h, 4w]
        kernels = self.output_hypernetwork_mlps(tokens[:, len(TASK_HEADS):])          # [B, 11, 32]
        fb, fc, fh, fw = features.shape
        out["segmentation"] = (kernels @ features.reshape(fb, fc, fh * fw)).reshape(fb, -1, fh, fw)
        return out


class RandomFourierPE(nn.Module):
    """Positional encoding from a fixed random 2 x F matrix: [sin, cos](2π (2p − 1) M) per pixel."""

    def __init__(self, features: int = _DIM // 2):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, features))

    def forward(self, h: int, w: int) -> torch.Tensor:
        """[2F, h, w] for pixel centres ((i + 0.5) / size), coordinates ordered (x, y)."""
        m = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=m.device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=m.device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)], dim=-1)   # [h, w, 2]
        angle = 2 * math.pi * ((2 * grid - 1) @ m)
        return torch.cat([angle.sin(), angle.cos()], dim=-1).permute(2, 0, 1)


class StageProjection(nn.Module):
    """Per-token linear map of one encoder stage to the decoder width."""

    def __init__(self, channels: int, dim: int = _DIM):
        super().__init__()
        self.proj = nn.Linear(channels, dim)

    def forward(self, nhwc: torch.Tensor) -> torch.Tensor:
        """[B, H, W, C] stage output → [B, dim, H, W]."""
        b, h, w, c = nhwc.shape
        return self.proj(nhwc.reshape(b, h * w, c)).transpose(1, 2).reshape(b, -1, h, w)


# ----------------------------------------------------------------------------------------------
# the model


def _swin_b_encoder() -> nn.Sequential:
    """torchvision Swin-B without its classifier, randomly initialised (never downloads)."""
    swin = torchvision.models.swin_b(weights=None)
    return nn.Sequential(*list(swin.children())[:-1])   # features, norm, permute, avgpool, flatten


class FaceXFormer(nn.Module):
    """FaceXFormer (parsing + six face-analysis heads) with the official state_dict layout.

    ``forward(x)`` takes ImageNet-normalised RGB crops [B, 3, 224, 224] and returns a dict:
    ``segmentation`` [B, 11, 224, 224] (parsing logits), ``landmarks`` [B, 136],
    ``headpose`` [B, 3], ``attribute`` [B, 40], ``visibility`` [B, 29], ``age`` [B, 8],
    ``gender`` [B, 2], ``race`` [B, 5] — all from one pass (the original's task ids only select
    which of these it returns).
    """

    def __init__(self):
        super().__init__()
        self.backbone = _swin_b_encoder()
        self.pe_layer = RandomFourierPE()
        self.face_decoder = FaceDecoder()
        self.linear_c = nn.ModuleList(StageProjection(c) for c in _STAGE_WIDTHS)
        self.linear_fuse = nn.Conv2d(_DIM * len(_STAGE_WIDTHS), _DIM, kernel_size=1, bias=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Fused multi-scale image features [B, 256, H/4, W/4]."""
        stages = []
        h = x
        for i, block in enumerate(self.backbone[0]):
            h = block(h)
            if i in _STAGE_INDICES:
                stages.append(h)                               # NHWC
        # (the encoder's final LayerNorm and pooling feed nothing, so they are not run)
        size = stages[0].shape[1:3]
        projected = [F.interpolate(proj(s), size=size, mode="bilinear", align_corners=False)
                     for s, proj in zip(stages, self.linear_c)]
        return self.linear_fuse(torch.cat(projected[::-1], dim=1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FaceXFormer expects [B, 3, H, W] images, got {tuple(x.shape)}")
        features = self.encode(x)
        pe = self.pe_layer(*features.shape[2:]).unsqueeze(0)
        return self.face_decoder(features, pe)

    def parsing_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Only the parsing logits [B, 11, H, W]."""
        return self.forward(x)["segmentation"]


# ----------------------------------------------------------------------------------------------
# checkpoint


def check_facexformer_layout(state: dict, what: str) -> FaceXFormer:
    """Strict name / shape check of ``state`` against a FaceXFormer on the meta device (returned)."""
    with torch.device("meta"):
        model = FaceXFormer()
    load_state_dict_strict(model, {k: torch.as_tensor(v).to("meta") for k, v in state.items()}, what=what)
    return model


def facexformer_from_state(state: dict, what: str = "FaceXFormer state_dict") -> FaceXFormer:
    """A :class:`FaceXFormer` holding exactly ``state`` (strict; float tensors cast to float32).

    The model is built on the meta device (no random initialisation of 92 M values) and the
    checkpoint tensors are assigned to it.
    """
    model = check_facexformer_layout(state, what)
    own = model.state_dict()
    tensors = {k: (v.to(torch.float32) if v.is_floating_point() else v.to(own[k].dtype)).contiguous()
               for k, v in state.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{what}: not filled by the state_dict: {', '.join(left)}")
    return model


# ----------------------------------------------------------------------------------------------
# post-processing


def parse_logits_to_map(logits: torch.Tensor) -> np.ndarray:
    """Parsing logits [B, 11, H, W] (or [11, H, W]) → class map uint8 [B, H, W] (or [H, W]).

    Softmax over the classes, then argmax, as in the original (the softmax can merge
    near-ties, so this is not always the argmax of the raw logits).
    """
    single = logits.ndim == 3
    x = logits.unsqueeze(0) if single else logits
    if x.ndim != 4 or x.shape[1] != NUM_CLASSES:
        raise ValueError(f"expected logits [B, {NUM_CLASSES}, H, W], got {tuple(logits.shape)}")
    with torch.inference_mode():
        idx = torch.softmax(x.float(), dim=1).argmax(dim=1)
    out = idx.to(torch.uint8).cpu().numpy()
    return out[0] if single else out


def colorize_parsing(class_map: np.ndarray) -> np.ndarray:
    """Class map (uint8 ids, any shape) → RGB uint8 image (shape + (3,)) in the demo palette."""
    class_map = np.asarray(class_map)
    if class_map.size and int(class_map.max()) >= NUM_CLASSES:
        raise ValueError(f"class map holds id {int(class_map.max())}; valid ids are 0…{NUM_CLASSES - 1}")
    return PALETTE[class_map]


def overlay_parsing(crop_rgb: np.ndarray, class_map: np.ndarray) -> np.ndarray:
    """50/50 blend (OpenCV ``addWeighted``, rounded) of an RGB uint8 crop and its coloured map."""
    crop_rgb = np.ascontiguousarray(crop_rgb, dtype=np.uint8)
    colours = colorize_parsing(class_map)
    if colours.shape != crop_rgb.shape:
        raise ValueError(f"crop {crop_rgb.shape} and class map {np.shape(class_map)} differ in size")
    return cv2.addWeighted(crop_rgb, 0.5, colours, 0.5, 0)
