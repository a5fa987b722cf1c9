"""The networks: the small production CNNs, EfficientAT's MobileNetV3 (mn04, AudioSet-pretrained) with its
gunshot head, a seed-style ResNet-34 baseline and their torch front-ends.

Every production network takes a batch of log-mel windows (n, 1, n_mels, frames) in dB, as
``core.features.windows`` computes them, and returns one logit per window. ``TorchLogMel`` is the same
log-mel on a batch of waveforms in torch (training computes features for thousands of augmented windows
per step); ``SeedImageInput`` turns waveforms into the seed project's spectrogram images for ResNet-34.
"""

from __future__ import annotations

from typing import Any, cast

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


# ---------------------------------------------------------------- EfficientAT MobileNetV3
# MobileNetV3-Large (Howard et al. 2019, Table 1): kernel, expansion, out channels, SE, activation, stride.
_LARGE: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
)
_BN_EPS = 0.001
_BN_MOMENTUM = 0.01


def make_divisible(v: float, divisor: int = 8) -> int:
    """The reference width-multiplier rounding: nearest multiple, never more than 10 % below v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _conv_bn_act(
    c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act: str | None = None
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=_BN_EPS, momentum=_BN_MOMENTUM),
    ]
    if act == "RE":
        layers.append(nn.ReLU(inplace=True))
    elif act == "HS":
        layers.append(nn.Hardswish(inplace=True))
    return nn.Sequential(*layers)


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3))
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class _ConcurrentSE(nn.Module):
    """Key layout of EfficientAT's concurrent SE with only the channel branch (``conc_se_layers.0``)."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.conc_se_layers = nn.ModuleList([_SqueezeExcite(channels, squeeze)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class _InvertedResidual(nn.Module):
    def __init__(self, c_in: int, k: int, exp: int, c_out: int, se: bool, act: str, stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if exp != c_in:
            layers.append(_conv_bn_act(c_in, exp, 1, act=act))
        layers.append(_conv_bn_act(exp, exp, k, stride=stride, groups=exp, act=act))
        if se:
            layers.append(_ConcurrentSE(exp, make_divisible(exp // 4, 8)))
        layers.append(_conv_bn_act(exp, c_out, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


class MobileNetV3(nn.Module):
    """EfficientAT ``mn`` family; width 0.4 + 527 outputs is the AudioSet checkpoint ``mn04_as``."""

    def __init__(self, width: float = 0.4, num_classes: int = 527, dropout: float = 0.2) -> None:
        super().__init__()

        def c(v: float) -> int:
            return make_divisible(v * width, 8)

        c_first = c(16)
        layers: list[nn.Module] = [_conv_bn_act(1, c_first, 3, stride=2, act="HS")]
        c_in = c_first
        for k, exp, out, se, act, stride in _LARGE:
            layers.append(_InvertedResidual(c_in, k, c(exp), c(out), se, act, stride))
            c_in = c(out)
        last = 6 * c_in
        layers.append(_conv_bn_act(c_in, last, 1, act="HS"))
        self.features = nn.Sequential(*layers)
        self.embedding_dim = last
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(last, int(1280 * width)),
            nn.Hardswish(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(int(1280 * width), num_classes),
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 384-d pooled embedding."""
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# AudioSet classes the detector's output starts from: Gunshot/gunfire, Machine gun, Fusillade.
AUDIOSET_GUNSHOT_CLASSES = (427, 428, 429)


class MN04Detector(nn.Module):
    """Gunshot detector on EfficientAT's mn04 (``efficientat_32k`` features): backbone, the AudioSet head's
    hidden layer, and one logit initialised from the mean of the AudioSet gunshot classes, so fine-tuning
    starts from the zero-shot detector instead of from noise."""

    pretrained_lr_factor = 0.1  # the backbone and hidden layer learn 10x slower than the new output

    def __init__(self, n_mels: int = 128, frames: int = 100) -> None:
        super().__init__()
        if n_mels != 128:
            raise ValueError("mn04 expects 128 mel bands")
        net = MobileNetV3()
        self.features = net.features
        self.hidden = nn.Sequential(net.classifier[2], nn.Hardswish(), nn.Dropout(0.2))
        self.out = nn.Linear(cast(nn.Linear, net.classifier[5]).in_features, 1)

    def load_audioset(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the AudioSet checkpoint (strictly) into the backbone and initialise the output from it."""
        net = MobileNetV3()
        net.load_state_dict(state_dict, strict=True)
        self.features.load_state_dict(net.features.state_dict())
        self.hidden[0].load_state_dict(net.classifier[2].state_dict())
        idx = list(AUDIOSET_GUNSHOT_CLASSES)
        with torch.no_grad():
            head = cast(nn.Linear, net.classifier[5])
            self.out.weight.copy_(head.weight[idx].mean(0, keepdim=True))
            self.out.bias.copy_(head.bias[idx].mean().reshape(1))

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        pretrained = list(self.features.parameters()) + list(self.hidden.parameters())
        return [
            {"params": pretrained, "lr": lr * self.pretrained_lr_factor},
            {"params": list(self.out.parameters()), "lr": lr},
        ]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(self.embed(x))).squeeze(1)


class MN04Ensemble(nn.Module):
    """The shipped server model: the mean of two gunshot probabilities on the same windows, the fine-tuned
    MN04Detector's and a linear probe's on the untouched AudioSet embedding. On held-out firing positions the
    two make different mistakes (the probe keeps AudioSet's notion of music and sirens, fine-tuning learns
    street-sensor shots), and their mean beats either. Returns the logit of that mean."""

    def __init__(self, n_mels: int = 128, frames: int = 100) -> None:
        super().__init__()
        self.tuned = MN04Detector(n_mels, frames)
        self.probe_features = MobileNetV3().features
        self.probe = nn.Linear(make_divisible(160 * 0.4) * 6, 1)

    def load_audioset(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.tuned.load_audioset(state_dict)
        net = MobileNetV3()
        net.load_state_dict(state_dict, strict=True)
        self.probe_features.load_state_dict(net.features.state_dict())

    def trainable(self) -> nn.Module:
        """What gradient descent fine-tunes; the probe is fitted in closed form on the frozen embedding."""
        return self.tuned

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe_features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = 0.5 * (torch.sigmoid(self.tuned(x)) + torch.sigmoid(self.probe(self.embed(x)).squeeze(1)))
        p = p.clamp(1e-7, 1 - 1e-7)
        return torch.log(p) - torch.log1p(-p)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "gwcnn-1": GunshotCNN,
    "gwcnn-tiny": GunshotCNNTiny,
    # gwcnn-1's network (the device's 19 k parameters); the id names its recipe: distilled from mn04-ensemble
    # (core.training.distill), so evaluate_model retrains it with its teacher.
    "gwcnn-student": GunshotCNN,
    "mn04-gun": MN04Detector,
    "mn04-ensemble": MN04Ensemble,
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
        self.register_buffer("window", torch.from_numpy(stft_window(params.n_fft, params.win_length).copy()))
        self.register_buffer("basis", torch.from_numpy(mel_basis(params).copy()))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        p = self.params
        if p.preemphasis:
            waves = waves[:, 1:] - p.preemphasis * waves[:, :-1]
        efficientat = p.log_scale == "efficientat"
        spec = torch.stft(
            waves, p.n_fft, p.hop_length, window=self.window, center=True,
            pad_mode="reflect" if efficientat else "constant", return_complex=True,
        )  # fmt: skip
        power = spec.real**2 + spec.imag**2
        mel = torch.matmul(self.basis, power)
        if efficientat:
            return (torch.log(mel + 1e-5) + 4.5) / 5.0
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
