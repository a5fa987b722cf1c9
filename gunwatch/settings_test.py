"""Settings for the test suite: the production settings, plus what only tests want.

pytest-django selects this module (``DJANGO_SETTINGS_MODULE`` in pyproject.toml), so the
production settings never guess whether they run under a test runner. Servers that tests start
in a subprocess (``./gw run``, the live map) run with ``gunwatch.settings`` like a deployment.
"""

from __future__ import annotations

from gunwatch.settings import *  # noqa: F403 - every production setting, overridden below
from gunwatch.settings import env_bool

# Hashing dominates the run time of auth-heavy tests; MD5 is fine for throwaway users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tasks run in the calling thread, so a test observes their outcome as soon as the call returns
# (the embedded mode's background thread is what the demo wants, not a deterministic test).
GUNWATCH_EAGER_IN_THREAD = env_bool("GUNWATCH_EAGER_IN_THREAD", False)
