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
    # a pretrained starting point (mn04-gun: EfficientAT's AudioSet checkpoint, ../shared/pretrained/mn04_as_mAP_432.pt)
    pretrained: str | Path | None = None
    # hard negatives mined from the training fold with the pretrained embedding (needs ``pretrained``)
    mine_hard_negatives: bool = False
    # the probe on the frozen embedding (mn04-ensemble's second member, and the hard-negative miner)
    probe_c: float = 0.5  # inverse L2 strength of its logistic regression
    probe_augmented: bool = True  # also fit it on field-augmented windows
    # the loop
    epochs: int = 12
    steps_per_epoch: int = 128
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    threads: int = 1
    weight_decay: float = 1e-3
    ema_decay: float = 0.995
    warmup_fraction: float = 0.15
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
    # validation protocols run after the main fit (core.training.protocols.PROTOCOLS); the first one's held-out
    # predictions fit the calibration and the operating points stored in the weights
    protocols: tuple[str, ...] = ()
    folds: tuple[str, ...] = ()  # only these folds of the protocols (by name, e.g. "us8k", "FP3"); empty: every fold
    calibrate: bool = False
    holdout: bool = True  # False: train on every clip (the shipped model), judged by the protocols instead
    # a student recipe (TrainSettings.student): the teacher trained first on the same training clips
    distill: DistillSettings | None = None

    @property
    def loop(self) -> LoopSettings:
        return LoopSettings(
            self.architecture, self.epochs, self.steps_per_epoch, self.batch_size, self.lr, self.target_fpr,
            self.threads, self.weight_decay, self.ema_decay, self.warmup_fraction,
            str(self.pretrained) if self.pretrained else None, self.mine_hard_negatives,
            str(self.cache_dir) if self.cache_dir else None, self.probe_c, self.probe_augmented, self.distill,
        )  # fmt: skip

    @classmethod
    def mn04(
        cls, manifest: str | Path, out_dir: str | Path, pretrained: str | Path | None, **overrides: Any
    ) -> TrainSettings:
        """The recipe of the shipped model: mn04 fine-tuned for 600 steps of 32 windows (backbone 1e-4, output
        1e-3) with probe-mined hard negatives; architecture "mn04-ensemble" adds the probe as second member."""
        from core.features import efficientat_32k

        base: dict[str, Any] = {
            "architecture": "mn04-ensemble", "params": efficientat_32k(), "pretrained": pretrained,
            "mine_hard_negatives": True, "epochs": 5, "steps_per_epoch": 120, "batch_size": 32, "lr": 1e-3,
            "weight_decay": 1e-4, "ema_decay": 0.99, "warmup_fraction": 0.1, "weights_name": "mn04-ensemble.pt",
            "augment": AugmentConfig(p_band_limit=0.5, p_distance=0.5),
        }  # fmt: skip
        base.update(overrides)
        return cls(manifest=manifest, out_dir=out_dir, **base)

    @classmethod
    def student(
        cls,
        manifest: str | Path,
        out_dir: str | Path,
        pretrained: str | Path | None,
        *,
        teacher: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> TrainSettings:
        """The device student (architecture "gwcnn-student"): gwcnn-1's network and 16-kHz features, trained on
        the mn04-ensemble teacher's probabilities. The teacher is the full mn04 recipe (``teacher`` overrides it,
        for smoke runs), retrained on whatever clips the student trains on (a protocol fold's training clips
        only), never the shipped file."""
        keys = ("seed", "threads", "cache_dir", "probe_c", "probe_augmented")
        shared = {k: overrides[k] for k in keys if k in overrides}
        recipe = cls.mn04(manifest, out_dir, pretrained, **{**shared, **(teacher or {})})
        # 480 steps, not gwcnn-1's 1,536: every step also runs the teacher on its 64 windows (~0.5 s of one
        # core), and the soft targets carry more per window than a hard label.
        base: dict[str, Any] = {
            "architecture": STUDENT, "params": FeatureParams(), "epochs": 6, "steps_per_epoch": 80,
            "weights_name": f"{STUDENT}.pt",
            "distill": DistillSettings(recipe.params, recipe.loop, recipe.augment),
        }  # fmt: skip
        base.update(overrides)
        return cls(manifest=manifest, out_dir=out_dir, **base)


STUDENT = "gwcnn-student"


@dataclass(frozen=True)
class DistillSettings:
    """The teacher of a student recipe: its features, loop and augmentation, and how its scores are mixed in."""

    teacher_params: FeatureParams
    teacher_loop: LoopSettings
    teacher_augment: AugmentConfig
    # target = alpha * teacher probability + (1 - alpha) * hard label: the label keeps the student anchored
    # where the teacher is wrong, the teacher's probability says how gunshot-like a non-gunshot window is.
    alpha: float = 0.7


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
    weight_decay: float = 1e-3
    ema_decay: float = 0.995
    warmup_fraction: float = 0.15
    pretrained: str | None = None
    mine_hard_negatives: bool = False
    # where the probe's fold-independent frozen embeddings are cached (core.training.probe.clip_embeddings)
    cache_dir: str | None = None
    probe_c: float = 0.5
    probe_augmented: bool = True
    distill: DistillSettings | None = None


@dataclass
class TrainResult:
    out_dir: Path
    weights_path: Path
    sha256: str
    threshold: float
    metrics: dict[str, Any]
    card: dict[str, Any] = field(default_factory=dict)
