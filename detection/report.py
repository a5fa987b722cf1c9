"""Temporary shim, removed after the restructure merge: moved to core.report."""

from core.report import *  # noqa: F403
from core.report import _num, _pct, _short  # noqa: F401
