"""Every model of ours has a factory, and each factory makes a row the model's own validation accepts."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps

from tests import factories

OUR_APPS = ("accounts", "devices", "detection", "alerts")


def _factories_by_model() -> dict[type, type[factories.ModelFactory[Any]]]:
    found: dict[type, type[factories.ModelFactory[Any]]] = {}
    for value in vars(factories).values():
        if isinstance(value, type) and issubclass(value, factories.ModelFactory) and value._meta.model is not None:
            found.setdefault(value._meta.model, value)
    return found


def test_every_model_has_a_factory() -> None:
    models = {model for name in OUR_APPS for model in apps.get_app_config(name).get_models()}
    missing = sorted(model.__name__ for model in models - set(_factories_by_model()))
    assert missing == []


def _name(factory_class: Any) -> str:
    return factory_class.__name__


@pytest.mark.parametrize("factory_class", sorted(_factories_by_model().values(), key=_name), ids=_name)
@pytest.mark.django_db
def test_factory_makes_a_valid_saved_row(factory_class: type[factories.ModelFactory[Any]]) -> None:
    first, second = factory_class(), factory_class()
    for row in (first, second):
        row.full_clean()
        assert type(row).objects.filter(pk=row.pk).exists()
