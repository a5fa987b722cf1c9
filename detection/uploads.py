"""Temporary shim, removed after the restructure merge: upload inspection moved to core.audio."""

from core.audio import *  # noqa: F403
from core.audio import _WAV_EXTENSIBLE, _WAV_TAGS, _WAV_UNKNOWN_LENGTHS, _wav_chunks  # noqa: F401
