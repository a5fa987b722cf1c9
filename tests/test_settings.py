"""Settings: every variable is documented, and bad values fail loudly."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from gunwatch import settings as gw_settings
from tests.conftest import REPO_ROOT


def test_every_environment_variable_is_listed_in_env_example() -> None:
    source = (REPO_ROOT / "gunwatch" / "settings.py").read_text()
    read = set(re.findall(r'env_(?:str|bool|int|float|list|secret)\("([A-Z0-9_]+)"', source))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (REPO_ROOT / ".env.example").read_text(), re.M))
    assert read, "the pattern found no settings at all"
    assert read - documented == set()


@pytest.mark.parametrize(
    ("helper", "raw"), [(gw_settings.env_bool, "Flase"), (gw_settings.env_int, "ten"), (gw_settings.env_float, "1,5")]
)
def test_typos_in_settings_fail_loudly(monkeypatch, helper, raw: str) -> None:
    monkeypatch.setenv("GW_PROBE", raw)
    with pytest.raises(ImproperlyConfigured, match="GW_PROBE"):
        helper("GW_PROBE", 1)


def test_secret_can_come_from_a_file(monkeypatch, tmp_path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("GW_PROBE_FILE", str(secret))
    assert gw_settings.env_secret("GW_PROBE") == "s3cret"
    monkeypatch.setenv("GW_PROBE_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured):
        gw_settings.env_secret("GW_PROBE")


def _check_deploy(tmp_path, **overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env.update(
        {
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "gunwatch.example.org",
            "SITE_URL": "https://gunwatch.example.org",
            "GUNWATCH_VAR_DIR": str(tmp_path),
            **overrides,
        }
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_production_start_passes_check_deploy_without_warnings(tmp_path) -> None:
    result = _check_deploy(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_still_warns_when_hsts_and_the_redirect_are_switched_off(tmp_path) -> None:
    result = _check_deploy(tmp_path, SECURE_HSTS_SECONDS="0", SECURE_SSL_REDIRECT="false")
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout and "security.W008" in result.stderr + result.stdout
