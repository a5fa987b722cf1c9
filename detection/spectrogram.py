"""Temporary shim, removed after the restructure merge: moved to core.spectrogram."""

from core.spectrogram import *  # noqa: F403
