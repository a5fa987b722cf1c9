"""Temporary shim, removed after the restructure merge: moved to core.audio and core.features."""

from core.audio import *  # noqa: F403
from core.audio import SILENCE_PEAK as _SILENCE_PEAK  # noqa: F401
from core.features import *  # noqa: F403
from core.features import stft_window as _window  # noqa: F401
