"""The SSR-2D completion network (§3.2): a dense 3D U-Net with two encoders and three decoders.

    geometry (TSDF, observed mask) -> encoder of `num_levels` residual blocks --\\
                                                                                 concat -> fusion blocks
    colour (RGB)                   -> encoder of `num_levels` residual blocks --/            |
                                                                       +-----------+---------+
                                    decoders (each `num_levels` blocks) | TSDF | colour | semantics |

Encoder block 0 keeps the input resolution, blocks 1.. each halve it with a stride-2 first
convolution (the paper: 5 blocks, 128 x 64 x 64 chunks down to 128 x 8 x 4 x 4 codes). The
bottleneck codes of both encoders are concatenated and fused by residual blocks of the same width
(2 c). Each decoder starts with a residual block at the bottleneck, then upsamples level by level
(transposed convolution) and concatenates the geometry and colour features of the same level
(the skip connections) before a residual block. Heads: TSDF = tanh (truncation-normalised, as
`VoxelMap` stores it), colour = sigmoid (in [0, 1]), semantics = per-class logits.

Choices where the paper is silent: the geometry input has a second channel, the observed mask
(weight > 0), so that unobserved voxels (TSDF 1 in a map chunk) differ from observed free space;
the colour input is RGB in [0, 1] with zeros where unobserved; residual blocks are conv3-GroupNorm-
ReLU-conv3-GroupNorm plus a (1x1, strided) shortcut, then ReLU (GroupNorm, not BatchNorm: the paper
trains with batch size 2); channel widths double per level from `base_channels` up to
`max_channels`. CPU default: base 4, 5 levels (4..64 channels). GPU setting: `gpu_sized()`,
base 16 capped at 128 (the paper's 128-channel bottleneck codes).
"""

from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class CompletionNetworkConfig:
    """Size of the SSR-2D completion network."""

    num_classes: int = 14
    """Semantic classes the semantic decoder predicts (logits per class)."""
    base_channels: int = 4
    """Feature channels at full resolution; doubled at every level."""
    max_channels: int = 64
    """Feature channels are capped at this (the bottleneck width c of each encoder)."""
    num_levels: int = 5
    """Residual blocks per encoder and per decoder; the chunk is halved num_levels - 1 times."""
    fusion_blocks: int = 1
    """Residual blocks fusing the concatenated bottleneck codes (2 c channels)."""
    use_observed_mask: bool = True
    """The geometry encoder also reads the observed mask (weight > 0) as a second channel."""
    use_color: bool = True
    """Colour encoder and colour decoder present (False: the paper's colour-blind variant)."""

    def channels(self, level: int) -> int:
        return min(self.base_channels * 2**level, self.max_channels)

    @classmethod
    def gpu_sized(cls, num_classes: int = 14) -> "CompletionNetworkConfig":
        """The paper-sized network: 5 levels, 16..128 channels (128-channel bottleneck codes)."""
        return cls(num_classes=num_classes, base_channels=16, max_channels=128, num_levels=5, fusion_blocks=2)


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups of at least 2 channels."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0 and (channels >= 2 * g or g == 1))
    return nn.GroupNorm(groups, channels)


class ResidualBlock3d(nn.Module):
    """conv3 (stride s) - norm - ReLU - conv3 - norm, plus a shortcut (1x1 conv when the shape changes), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _norm(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False), _norm(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class Encoder3d(nn.Module):
    """A stem convolution, then `num_levels` residual blocks; blocks 1.. halve the resolution."""

    def __init__(self, in_channels: int, config: CompletionNetworkConfig):
        super().__init__()
        c = config.channels
        self.stem = nn.Sequential(nn.Conv3d(in_channels, c(0), 3, padding=1, bias=False), _norm(c(0)), nn.ReLU())
        self.blocks = nn.ModuleList(
            [ResidualBlock3d(c(0), c(0))] + [ResidualBlock3d(c(i - 1), c(i), stride=2) for i in range(1, config.num_levels)]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:  # code [B, c, ...], skips per level (fine first)
        x = self.stem(x)
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
        return skips[-1], skips[:-1]


class Decoder3d(nn.Module):
    """A residual block at the bottleneck, then per level: upsample, concatenate the skips, residual block; a 1x1 head."""

    def __init__(self, out_channels: int, config: CompletionNetworkConfig, encoders: int):
        super().__init__()
        c, top = config.channels, config.num_levels - 1
        self.bottom = ResidualBlock3d(encoders * c(top), c(top))
        self.up = nn.ModuleList([nn.ConvTranspose3d(c(i + 1), c(i), 2, stride=2) for i in reversed(range(top))])
        self.blocks = nn.ModuleList([ResidualBlock3d((1 + encoders) * c(i), c(i)) for i in reversed(range(top))])
        self.head = nn.Conv3d(c(0), out_channels, 1)

    def forward(self, code: torch.Tensor, skips: list) -> torch.Tensor:  # skips: per level, fine first, encoders concatenated
        x = self.bottom(code)
        for up, block, skip in zip(self.up, self.blocks, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class CompletionNetwork(nn.Module):
    """TSDF, colour and semantics of every voxel of a chunk from its incomplete TSDF and colour.

    Inputs: tsdf [B, X, Y, Z] truncation-normalised in [-1, 1] (1 where unobserved), observed
    [B, X, Y, Z] bool/float (weight > 0), color [B, 3, X, Y, Z] in [0, 1]. X, Y, Z must be
    multiples of 2^(num_levels - 1). Outputs a dict: tsdf [B, X, Y, Z] in (-1, 1), color
    [B, 3, X, Y, Z] in (0, 1) (absent when use_color is False), semantics [B, C, X, Y, Z] logits.
    """

    def __init__(self, config: CompletionNetworkConfig):
        super().__init__()
        self.config = config
        encoders = 2 if config.use_color else 1
        top = config.num_levels - 1
        self.geometry_encoder = Encoder3d(2 if config.use_observed_mask else 1, config)
        self.color_encoder = Encoder3d(3, config) if config.use_color else None
        width = encoders * config.channels(top)
        self.fusion = nn.Sequential(*[ResidualBlock3d(width, width) for _ in range(config.fusion_blocks)])
        self.tsdf_decoder = Decoder3d(1, config, encoders)
        self.color_decoder = Decoder3d(3, config, encoders) if config.use_color else None
        self.semantic_decoder = Decoder3d(config.num_classes, config, encoders)

    @property
    def size_multiple(self) -> int:
        """Chunk sizes must be multiples of this."""
        return 2 ** (self.config.num_levels - 1)

    def forward(self, tsdf: torch.Tensor, observed: torch.Tensor, color: torch.Tensor = None) -> dict:
        if any(n % self.size_multiple for n in tsdf.shape[1:]):
            raise ValueError(f"chunk shape {tuple(tsdf.shape[1:])} is not a multiple of {self.size_multiple} on every axis")
        geometry = tsdf.unsqueeze(1)  # [B, 1, X, Y, Z]
        if self.config.use_observed_mask:
            geometry = torch.cat([geometry, observed.unsqueeze(1).to(tsdf.dtype)], dim=1)
        code, skips = self.geometry_encoder(geometry)
        if self.color_encoder is not None:
            if color is None:
                raise ValueError("this completion network reads colour; pass color [B, 3, X, Y, Z]")
            color_code, color_skips = self.color_encoder(color)
            code = torch.cat([code, color_code], dim=1)
            skips = [torch.cat(pair, dim=1) for pair in zip(skips, color_skips)]
        code = self.fusion(code)
        out = {
            "tsdf": torch.tanh(self.tsdf_decoder(code, skips)[:, 0]),
            "semantics": self.semantic_decoder(code, skips),
        }
        if self.color_decoder is not None:
            out["color"] = torch.sigmoid(self.color_decoder(code, skips))
        return out


def chunk_inputs(chunk: dict, device="cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network inputs from `VoxelMap.read_chunk`: tsdf [1, X, Y, Z] (1 where unobserved), observed
    [1, X, Y, Z] bool (weight > 0), color [1, 3, X, Y, Z] in [0, 1] (0 where unobserved)."""
    observed = torch.as_tensor(chunk["weight"] > 0, device=device)[None]
    tsdf = torch.as_tensor(chunk["tsdf"], dtype=torch.float32, device=device)[None]
    color = torch.as_tensor(chunk["color"], device=device).permute(3, 0, 1, 2).float()[None] / 255.0
    return tsdf, observed, color * observed[:, None]


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ----------------------------------------------------------------------------- checkpoints
CHECKPOINT_FORMAT = "semantic_mapping.completion"
CHECKPOINT_VERSION = 1


class CompletionWeightsError(ValueError):
    """Completion weights that cannot be used (missing, corrupt, or for another label space).

    The map then runs without completion (observed geometry only).
    """


def save_completion_model(path: os.PathLike, net: CompletionNetwork, meta: dict = None) -> None:
    """Write the weights, the network config (a plain dict) and `meta` (plain types only) atomically."""
    from semantic_mapping.atomic_files import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": dataclasses.asdict(net.config),
                "state_dict": net.state_dict(), "meta": meta or {}}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_completion_model(path: os.PathLike, num_classes: int = None, device="cpu") -> CompletionNetwork:
    """The network saved at `path`, in eval mode, loaded with weights_only=True; its checkpoint meta
    (e.g. voxel_size_m) is `net.meta`.

    Raises CompletionWeightsError naming the path when the file is missing, unreadable, not a
    completion checkpoint, or trained for another number of classes than `num_classes` (if given).
    """
    advice = "train one with `semantic-mapping train-completion` or set the completion weights path; the map runs without completion meanwhile"
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CompletionWeightsError(f"no completion weights at {path}: {advice}") from exc
    except Exception as exc:  # unpickling errors, truncated files
        raise CompletionWeightsError(
            f"completion weights at {path} are unreadable ({type(exc).__name__}: {exc}); {advice}") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CompletionWeightsError(f"{path} is not a completion checkpoint; {advice}")
    if data.get("version") != CHECKPOINT_VERSION:
        raise CompletionWeightsError(f"{path} has completion checkpoint version {data.get('version')}, "
                                     f"expected {CHECKPOINT_VERSION}; {advice}")
    try:
        config = CompletionNetworkConfig(**data["config"])
    except (TypeError, KeyError) as exc:
        raise CompletionWeightsError(f"{path} holds an unknown network config ({exc}); {advice}") from exc
    if num_classes is not None and config.num_classes != num_classes:
        raise CompletionWeightsError(
            f"{path} was trained for {config.num_classes} classes, the label space has {num_classes}; {advice}")
    net = CompletionNetwork(config)
    try:
        net.load_state_dict(data["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise CompletionWeightsError(f"{path} does not match the completion network ({exc}); {advice}") from exc
    net.meta = dict(data.get("meta") or {})
    return net.to(device).eval()
