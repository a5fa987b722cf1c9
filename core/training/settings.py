"""What a training run is told (TrainSettings, instead of 25 keyword arguments) and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.features import FeatureParams
from core.training.augment import AugmentConfig


@dataclass(frozen=True)
class TrainSettings:
    """One training run: data, network and loop, threshold choice, outputs and optional extras."""

    manifest: str | Path
    out_dir: str | Path
    # network and features
    architecture: str = "gwcnn-1"
    params: FeatureParams = field(default_factory=FeatureParams)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # the loop
    epochs: int = 12
    steps_per_epoch: int = 128
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    threads: int = 1
    # the threshold (see core.training.threshold.choose_threshold)
    target_fpr: float = 0.01
    max_alarms_per_hour: float = 1.0
    threshold_rule: Literal["clip_fpr", "stricter"] = "clip_fpr"
    # data and outputs
    weights_name: str = "gwcnn-1.pt"
    cache_dir: str | Path | None = None
    limit: int | None = None  # a small label-balanced subset, for smoke runs
    # extras written into the model card
    logo: bool = False
    logo_epochs: int | None = None
    baseline: bool = False
    baseline_epochs: int = 2
    baseline_steps: int = 24
    speed: bool = True

    @property
    def loop(self) -> LoopSettings:
        return LoopSettings(
            self.architecture, self.epochs, self.steps_per_epoch, self.batch_size, self.lr, self.target_fpr,
            self.threads,
        )  # fmt: skip


@dataclass(frozen=True)
class LoopSettings:
    """How one network is fitted; TrainSettings.loop derives it, the LOGO folds reuse it with fewer epochs."""

    architecture: str
    epochs: int
    steps_per_epoch: int
    batch_size: int
    lr: float
    target_fpr: float
    threads: int


@dataclass
class TrainResult:
    out_dir: Path
    weights_path: Path
    sha256: str
    threshold: float
    metrics: dict[str, Any]
    card: dict[str, Any] = field(default_factory=dict)
