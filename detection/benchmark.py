"""Temporary shim, removed after the restructure merge: moved to core.benchmark."""

from core.benchmark import *  # noqa: F403
from core.benchmark import _cpu_ms, _ours, _seed  # noqa: F401
