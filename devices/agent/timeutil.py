"""Timestamps and what the agent can say about the quality of its clock."""

from __future__ import annotations

import ctypes
import ctypes.util
from datetime import UTC, datetime
from pathlib import Path

CLOCK_SOURCES = ("system", "ntp", "gps")

# No clip can have been recorded before this agent was written: a clock earlier than this was never set (a
# Raspberry Pi without a real-time clock boots in 1970 until NTP answers). The server refuses such stamps
# (recorded_too_old), so the agent corrects them itself when it can (see runner.Agent._clock_checked).
CLOCK_FLOOR = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

# From <sys/timex.h>: the kernel clears STA_UNSYNC while NTP/chrony (or a GPS/PPS-fed daemon) disciplines it.
_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


def iso_utc(epoch_s: float) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. 2026-01-02T03:04:05.678Z."""
    stamp = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def clock_plausible(epoch_s: float) -> bool:
    return epoch_s >= CLOCK_FLOOR


def boot_id() -> str | None:
    """This boot's identity: a monotonic time means something only within the boot that measured it."""
    try:
        return _BOOT_ID.read_text().strip() or None
    except OSError:
        return None


class _Timex(ctypes.Structure):
    # Only the leading fields are read; the padding covers the rest of struct timex on 32- and 64-bit Linux.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


def kernel_clock_synchronized() -> bool | None:
    """True if the kernel says an NTP-style daemon keeps the clock in sync; None where that is unknowable."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        timex = _Timex()  # modes=0: read only, needs no privileges
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not (timex.status & _STA_UNSYNC)


def detect_clock_source(override: str | None = None) -> str:
    """Report what we know about the clock that stamps clips.

    Timestamps come from the system clock, so a GPS fix alone proves nothing about them; ``gps`` is only
    reported when the operator says the clock is GPS/PPS-disciplined (``--clock-source gps``, e.g. chrony fed
    by gpsd). Otherwise the kernel tells us whether some NTP-style daemon keeps it in sync.
    """
    if override and override != "auto":
        return override
    return "ntp" if kernel_clock_synchronized() else "system"
