"""The suite runs on gunwatch/settings_test.py; production settings never guess whether a test runner loaded them."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings

from tests.conftest import REPO_ROOT

MD5 = "django.contrib.auth.hashers.MD5PasswordHasher"


def test_the_suite_runs_on_the_test_settings() -> None:
    # settings.SETTINGS_MODULE reads None inside a test: the autouse fixtures override settings.
    assert os.environ["DJANGO_SETTINGS_MODULE"] == "gunwatch.settings_test"
    assert settings.PASSWORD_HASHERS == [MD5]


def test_production_settings_are_the_same_with_pytest_imported() -> None:
    probe = (
        "import pytest, django\n"
        "from django.conf import settings\n"
        "django.setup()\n"
        "print(settings.GUNWATCH_EAGER_IN_THREAD, settings.PASSWORD_HASHERS[0])\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GUNWATCH_", "DJANGO_"))}
    env["DJANGO_SETTINGS_MODULE"] = "gunwatch.settings"
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    eager_in_thread, hasher = result.stdout.split()
    assert eager_in_thread == "True"
    assert hasher != MD5
