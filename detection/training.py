"""Temporary shim, removed after the restructure merge: moved to the package core.training.

train() now takes a TrainSettings.
"""

from core.networks import SeedImageInput, TorchLogMel  # noqa: F401
from core.training import *  # noqa: F403
from core.training.augment import _rms  # noqa: F401
from core.training.baseline import run_baseline  # noqa: F401
from core.training.data import (  # noqa: F401
    _cache_key,
    data_summary,
    limited,
    load_waves,
    write_split_manifest,
)
from core.training.logo import run_logo  # noqa: F401
from core.training.loop import (  # noqa: F401
    _append_csv,
    clip_scores,
    configure_determinism,
    fit_network,
    production_windows,
    train_one,
    val_metrics,
)
from core.training.run import _strip_scores  # noqa: F401
from core.training.threshold import choose_threshold  # noqa: F401
