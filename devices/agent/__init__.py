"""GunWatch device agent: listens, picks impulsive events, and uploads them to a GunWatch server.

This package must stay importable without Django so that it installs on a Raspberry Pi by itself
(see ``requirements.txt`` next to this file).
"""

from __future__ import annotations

__version__ = "0.1.0"
FIRMWARE_VERSION = f"agent-{__version__}"
