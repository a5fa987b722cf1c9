"""Permission predicates shared by the API, the pages and the websocket consumer."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission

from accounts.models import User


def is_person(user: Any) -> bool:
    """A logged-in human account (devices authenticate too, but they are not users)."""
    return isinstance(user, User) and user.is_authenticated and user.is_active


def has_police_access(user: Any) -> bool:
    return is_person(user) and user.has_police_access


class IsPerson(BasePermission):
    message = "This endpoint is for user accounts, not devices."

    def has_permission(self, request: Any, view: Any) -> bool:
        return is_person(request.user)


class IsPolice(BasePermission):
    message = "Only approved police accounts may do this."

    def has_permission(self, request: Any, view: Any) -> bool:
        return has_police_access(request.user)
