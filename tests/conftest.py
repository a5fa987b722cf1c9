"""Shared fixtures: the cast (owner, other owner, police, pending police, admin), clients, devices,
tiny registered models, a headless browser page; and, for every test, an isolated media folder and
cache, eager Celery tasks and an empty model cache.

Fixtures live in conftest.py files only (pytest finds them; no test module imports fixtures).
Plain helpers live beside them: ``tests/factories.py`` (a factory per model),
``tests/core/helpers_audio.py`` (audio, tiny weights, manifests), ``tests/detection/pipeline.py``
(encoded clips, upload fields), ``tests/alerts/helpers.py`` (classifications made directly).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from accounts.models import User
from alerts.models import PoliceStation
from detection import inference
from detection.models import ModelVersion
from detection.services.registry import model_version_register
from devices import services
from devices.models import Device
from gunwatch.celery import app as celery_app
from tests.core.helpers_audio import make_weights
from tests.factories import DeviceFactory, PoliceStationFactory, PoliceUserFactory, UserFactory

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GUNWATCH_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated(settings: Settings, tmp_path: Path) -> Iterator[None]:
    """Every test gets its own media folder and an empty cache (throttle counters live there)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def owner(db: None) -> User:
    return UserFactory(username="alice")


@pytest.fixture
def other_owner(db: None) -> User:
    return UserFactory(username="bob")


@pytest.fixture
def station(db: None) -> PoliceStation:
    return PoliceStationFactory(name="Mitte", latitude=52.52, longitude=13.405)


@pytest.fixture
def police_user(station: PoliceStation) -> User:
    return PoliceUserFactory(username="officer", police_station=station)


@pytest.fixture
def pending_police(db: None) -> User:
    return UserFactory(username="rookie", role=User.Role.POLICE)


@pytest.fixture
def admin_user(db: None) -> User:
    return UserFactory(username="root", role=User.Role.ADMIN, is_staff=True, is_superuser=True)


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


def client_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def owner_client(owner: User) -> APIClient:
    return client_for(owner)


@pytest.fixture
def other_client(other_owner: User) -> APIClient:
    return client_for(other_owner)


@pytest.fixture
def device(owner: User) -> Device:
    return DeviceFactory(owner=owner, name="Home")


@pytest.fixture
def paired_device(owner: User) -> tuple[Device, str]:
    """A device that went through the real pairing flow, with its raw token."""
    _, issued = services.device_create(
        owner=owner, name="Kitchen", kind=Device.Kind.HOME, latitude=52.52, longitude=13.405
    )
    paired = services.device_pair(pairing_code=issued.code)
    return paired.device, paired.token


@pytest.fixture
def device_client(paired_device: tuple[Device, str]) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Device {paired_device[1]}")
    return client


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "manifest.csv").exists():
        pytest.skip(f"labelled audio not available at {SHARED_DATA}")
    return SHARED_DATA


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A headless Chromium page (Debian's chromium driven by Playwright); skips where it is absent."""
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium (apt-get install chromium) is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes around
    # it are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        # Map tiles would go to the internet, which this machine cannot reach; answer them locally.
        context.route(re.compile(r"tile\.openstreetmap\.org"), lambda route: route.fulfill(status=204))
        page = context.new_page()
        page.set_default_timeout(10_000)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def asgi_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The real ASGI server in a subprocess for a module's browser tests (``tests.browser.asgi_stack``),
    set up by the module's ``STACK_SETUP`` script, with its ``STACK_ENV`` on top of the embedded mode."""
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed at /usr/bin/chromium")
    pytest.importorskip("playwright.sync_api")
    from tests.browser import asgi_stack as run_stack

    root = tmp_path_factory.mktemp("stack")
    with run_stack(root, request.module.STACK_SETUP, getattr(request.module, "STACK_ENV", None)) as stack:
        yield stack


@pytest.fixture(autouse=True)
def eager_celery(settings: Settings) -> Iterator[None]:
    """Tasks run in the calling thread, even where REDIS_URL configured a broker (no worker runs in tests).

    Celery reads the eager flag once, so its own config is switched too, and restored after. A test
    of the broker path switches both back off itself.
    """
    saved = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = celery_app.conf.task_eager_propagates = True
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.GUNWATCH_EAGER_IN_THREAD = False
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = saved


@pytest.fixture(autouse=True)
def clean_inference(settings: Settings) -> Iterator[None]:
    """Each test starts with an empty model cache that asks the database on every call."""
    settings.MODEL_ACTIVE_CHECK_TTL_S = 0
    # Tracing every test's fresh random network would cost the suite minutes; the tests of the frozen
    # graph (tests/detection/test_compiled_inference.py, tests/core/test_classifier.py) switch it on.
    settings.INFERENCE_COMPILE = False
    inference.reset()
    yield
    inference.reset()


@pytest.fixture
def model_factory(db: None, tmp_path: Path) -> Callable[..., ModelVersion]:
    """Registers tiny random-weight networks (``make_weights``) as model versions, active by default."""
    counter = iter(range(1, 1000))

    def make(
        *,
        logit: float | None = None,
        threshold: float = 0.5,
        activate: bool = True,
        name: str = "tiny",
        version: str | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> ModelVersion:
        number = next(counter)
        path = make_weights(tmp_path / "weights" / f"w{number}.pt", logit=logit, threshold=threshold, seed=seed)
        return model_version_register(
            weights_path=path, name=name, version=version or f"1.{number}", activate=activate, **kwargs
        )

    return make


@pytest.fixture
def negative_model(model_factory: Callable[..., ModelVersion]) -> ModelVersion:
    """Active, and scores every window sigmoid(-8) ≈ 0.0003: everything is 'other'."""
    return model_factory(logit=-8.0, name="never")


@pytest.fixture
def positive_model(model_factory: Callable[..., ModelVersion]) -> ModelVersion:
    """Active, and scores every window sigmoid(8) ≈ 0.9997: everything is a 'gunshot'."""
    return model_factory(logit=8.0, name="always")
