"""The networks: the small production CNNs, a seed-style ResNet-34 baseline and their torch front-ends.

Every production network takes a batch of log-mel windows (n, 1, n_mels, frames) in dB, as
``core.features.windows`` computes them, and returns one logit per window. ``TorchLogMel`` is the same
log-mel on a batch of waveforms in torch (training computes features for thousands of augmented windows
per step); ``SeedImageInput`` turns waveforms into the seed project's spectrogram images for ResNet-34.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.features import FeatureParams, mel_basis, stft_window


def _conv_bn(
    c_in: int, c_out: int, kernel: tuple[int, int] = (3, 3), stride: tuple[int, int] = (1, 1)
) -> list[nn.Module]:
    padding = (kernel[0] // 2, kernel[1] // 2)
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class GunshotCNN(nn.Module):
    """Three conv blocks with early frequency striding and pooling, then max+mean pooling over time.

    The first layer strides over frequency and pools early because most of the compute budget
    (<= 1 ms CPU per second of audio including features) would otherwise go on full-resolution maps.
    Max-over-time pooling lets a single impulsive event anywhere in the window drive the score.
    """

    channels: tuple[int, int, int] = (16, 32, 48)

    def __init__(self, n_mels: int, frames: int) -> None:
        super().__init__()
        c1, c2, c3 = self.channels
        self.n_mels = n_mels
        self.frames = frames
        self.features = nn.Sequential(
            *_conv_bn(1, c1, kernel=(5, 3), stride=(2, 1)),
            nn.MaxPool2d(2),
            *_conv_bn(c1, c2),
            nn.MaxPool2d(2),
            *_conv_bn(c2, c3),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(2 * c3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Fixed affine scaling of dB values (floor -80 dB, peaks near 0 dB) to roughly unit range.
        x = (x + 40.0) / 20.0
        h = self.features(x).mean(dim=2)
        pooled = torch.cat([h.amax(dim=-1), h.mean(dim=-1)], dim=1)
        return self.head(self.dropout(pooled)).squeeze(1)


class GunshotCNNTiny(GunshotCNN):
    channels = (12, 24, 32)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet34(nn.Module):
    """ResNet-34 (He et al. 2016) on 3 x 224 x 224 spectrogram images, as the seed project used via fastai."""

    def __init__(self, num_outputs: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        layers: list[nn.Module] = []
        c_in = 64
        for c_out, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(_BasicBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(512, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.stem(x)).mean(dim=(2, 3))
        return self.head(h).squeeze(1)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "gwcnn-1": GunshotCNN,
    "gwcnn-tiny": GunshotCNNTiny,
}


def build(architecture: str, params: FeatureParams) -> nn.Module:
    """Instantiate a registered production architecture for the given feature parameters."""
    try:
        cls = ARCHITECTURES[architecture]
    except KeyError:
        raise KeyError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}") from None
    return cls(n_mels=params.n_mels, frames=params.frames_per_window)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class TorchLogMel(nn.Module):
    """Batch log-mel in torch, numerically matching features.log_mel (same window, padding, filterbank)."""

    window: torch.Tensor  # buffers, registered in __init__
    basis: torch.Tensor

    def __init__(self, params: FeatureParams) -> None:
        super().__init__()
        self.params = params
        self.register_buffer("window", torch.from_numpy(stft_window(params.n_fft).copy()))
        self.register_buffer("basis", torch.from_numpy(mel_basis(params).copy()))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        p = self.params
        spec = torch.stft(
            waves, p.n_fft, p.hop_length, window=self.window, center=True, pad_mode="constant",
            return_complex=True,
        )  # fmt: skip
        power = spec.real**2 + spec.imag**2
        mel = torch.matmul(self.basis, power)
        return 10.0 * torch.log10(torch.clamp(mel, min=p.amin))


class SeedImageInput:
    """The seed's input: a full-band 128-mel spectrogram image, min-max scaled, resized to 3 x 224 x 224."""

    def __init__(self) -> None:
        self.params = FeatureParams(n_fft=1024, hop_length=160, n_mels=128, fmin=20.0, fmax=8000.0)
        self.mel = TorchLogMel(self.params)

    def __call__(self, waves: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            mel = self.mel(waves)
            lo = mel.amin(dim=(1, 2), keepdim=True)
            hi = mel.amax(dim=(1, 2), keepdim=True)
            img = ((mel - lo) / (hi - lo + 1e-6)).unsqueeze(1)
            img = torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear", align_corners=False)
        return img.expand(-1, 3, -1, -1).contiguous()
