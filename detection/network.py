"""Temporary shim, removed after the restructure merge: moved to core.networks."""

from core.networks import *  # noqa: F403
from core.networks import _BasicBlock, _conv_bn  # noqa: F401
