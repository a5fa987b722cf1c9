"""Training the gunshot detector, one small module per job:

- ``settings``: TrainSettings (what a run is told), LoopSettings, TrainResult;
- ``data``: the manifest's clips, the group-aware split, LOGO folds, decoding with a cache;
- ``augment``: field-style augmented training windows (WindowSampler), SpecAugment, the CNN's input;
- ``loop``: the fit (AdamW, one-cycle, weight EMA) and whole-clip validation;
- ``threshold``: the shipped decision threshold;
- ``logo`` and ``baseline``: the leave-one-gun-model-out check and the seed-style ResNet-34 comparison;
- ``run``: ``train(settings)``, the whole run, writing weights and the model card;
- ``synthetic``: generated negatives (decaying noise bursts, clicks) and the issue's new-user test clip;
- ``protocol_table``: the model card's protocol tables from ``evaluate_model --out`` JSON.
"""

from core.training.augment import AugmentConfig, MelInput, WindowSampler, spec_augment
from core.training.data import (
    GUN_MODELS,
    HARD_NEGATIVES,
    KAGGLE_SOURCE,
    POSITIVE,
    ClipRecord,
    load_manifest,
    logo_folds,
    split_train_val,
)
from core.training.run import train
from core.training.settings import LoopSettings, TrainResult, TrainSettings

__all__ = [
    "GUN_MODELS",
    "HARD_NEGATIVES",
    "KAGGLE_SOURCE",
    "POSITIVE",
    "AugmentConfig",
    "ClipRecord",
    "LoopSettings",
    "MelInput",
    "TrainResult",
    "TrainSettings",
    "WindowSampler",
    "load_manifest",
    "logo_folds",
    "spec_augment",
    "split_train_val",
    "train",
]
