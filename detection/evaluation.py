"""Temporary shim, removed after the restructure merge: moved to core.evaluation."""

from core.evaluation import *  # noqa: F403
from core.evaluation import _evaluate, _grouped  # noqa: F401
