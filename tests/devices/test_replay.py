"""The joining rule over many simulated seeds: every fired shot is exactly one incident."""

from __future__ import annotations

import json

import pytest

from devices.replay import ReplayOptions, replay_seeds


@pytest.mark.django_db
def test_explore() -> None:
    summary = replay_seeds(range(int(__import__("os").environ.get("SEEDS", "10"))))
    print(json.dumps({k: v for k, v in summary.items() if k != "reports"}, indent=1))
