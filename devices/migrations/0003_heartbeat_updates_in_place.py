from __future__ import annotations

from typing import Any

from django.db import migrations

# Half of each page left free: a heartbeat's new row version then fits beside the old one, so PostgreSQL
# updates in place (HOT) and prunes the old version on its own. Only new pages honour it until a
# VACUUM FULL; a fleet's table is small. Other databases have no such setting.
FILLFACTOR = 50


def set_fillfactor(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE devices_device SET (fillfactor = {FILLFACTOR})")


def reset_fillfactor(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE devices_device RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("devices", "0002_trust_review"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="device",
            name="devices_online_deadline",
        ),
        migrations.RunPython(set_fillfactor, reset_fillfactor),
    ]
