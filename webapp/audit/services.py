"""The one write path of the audit log: every service that changes a team's things calls it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import models

from webapp.accounts.models import Team
from webapp.audit.models import Action, AuditEvent


def record_action(
    *,
    team: Team | int,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    target: models.Model | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Record that ``actor`` did ``action`` (a dotted name, ``Action``) to ``target`` in ``team``.

    Called inside the caller's transaction, so an action rolled back leaves no entry.
    ``target`` is any model instance; its type, id and a readable label are copied.
    """
    if action not in Action.values:
        # A programming error, not user input: a new action must be declared in Action.
        raise ValueError(f"unknown audit action {action!r}; declare it in webapp.audit.models.Action")
    person = actor if actor is not None and actor.is_authenticated else None
    return AuditEvent.objects.create(
        team_id=team if isinstance(team, int) else team.pk,
        actor=person,
        actor_label=person.get_username() if person else "",
        action=action,
        target_type=target._meta.model_name if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_label=_label(target),
        details=dict(details or {}),
    )


def _label(target: models.Model | None) -> str:
    if target is None:
        return ""
    if hasattr(target, "get_username"):
        return target.get_username()[:200]
    return str(getattr(target, "name", "") or target)[:200]
