from __future__ import annotations

from importlib import import_module

from django.apps import apps
from django.contrib.admin.apps import SimpleAdminConfig
from django.utils.module_loading import module_has_submodule


class GunWatchAdminConfig(SimpleAdminConfig):
    """Django's admin with autodiscovery that skips django-leaflet's admin module.

    django-leaflet's admin imports GeoDjango widgets, which need the GDAL C library; we use
    Leaflet for maps only and keep coordinates as plain floats, so GDAL would be dead weight.
    """

    skipped = frozenset({"leaflet"})

    def ready(self) -> None:
        super().ready()
        for config in apps.get_app_configs():
            if config.name in self.skipped or not module_has_submodule(config.module, "admin"):
                continue
            import_module(f"{config.name}.admin")
