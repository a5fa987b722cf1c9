"""Steps the browser tests share: logging in and filling the add-a-device form."""

from __future__ import annotations

from typing import Any

from tests.factories import PASSWORD


def log_in(page: Any, base_url: str, username: str) -> None:
    """Submit the login form as a factory-made user (the caller waits for whatever page it expects)."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def add_home_device(page: Any, name: str) -> None:
    """From the dashboard, submit the add-a-device form for a home device in Berlin."""
    page.click("text=Add a device")
    page.fill("input[name=name]", name)
    page.select_option("select[name=kind]", "home")
    page.fill("input[name=latitude]", "52.52")
    page.fill("input[name=longitude]", "13.40")
    page.click("button[type=submit]")
