"""Recordings shared by the agent's CLI tests and its live-server tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.devices.agent_support import noise, shots_in_noise, write_wav

SHOTS = [1.0, 3.0, 5.0]


@pytest.fixture
def shots_wav(tmp_path: Path) -> Path:
    """Seven seconds of noise with a gunshot-like impulse at each of SHOTS."""
    return write_wav(tmp_path / "shots.wav", shots_in_noise(SHOTS, 7.0))


@pytest.fixture
def quiet_wav(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "quiet.wav", noise(1.0, -60.0))
