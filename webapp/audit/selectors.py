"""Reads of a team's audit log: admins only, filtered by person, action and date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from webapp.accounts.models import Role, Team
from webapp.accounts.permissions import require_role
from webapp.audit.models import Action, AuditEvent
from webapp.input_errors import InputError

PAGE_SIZE = 100
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class AuditFilters:
    person: str = ""  # a username, as the log shows it
    action: str = ""
    since: date | None = None  # inclusive, UTC days
    until: date | None = None  # inclusive
    limit: int = PAGE_SIZE
    before: int | None = None  # an event's id: only entries older than it (the next page)

    def as_query(self) -> dict[str, str]:
        """The filters as the page's query string writes them (for links that keep them)."""
        query = {"person": self.person, "action": self.action}
        query["from"] = self.since.isoformat() if self.since else ""
        query["to"] = self.until.isoformat() if self.until else ""
        query["limit"] = str(self.limit) if self.limit != PAGE_SIZE else ""
        return {k: v for k, v in query.items() if v}


def parse_filters(params: dict[str, str]) -> AuditFilters:
    """Filters from a query string (page and API alike); a bad value is an InputError naming it."""
    errors: dict[str, str] = {}
    person = (params.get("person") or "").strip()
    if len(person) > 150:
        errors["person"] = "must be at most 150 characters"
    action = (params.get("action") or "").strip()
    if action and action not in Action.values:
        errors["action"] = f"must be one of {', '.join(Action.values)}"
    days = {}
    for field in ("from", "to"):
        raw = (params.get(field) or "").strip()
        days[field] = None
        if raw:
            days[field] = _day(raw)
            if days[field] is None:
                errors[field] = "must be a date written YYYY-MM-DD, e.g. 2026-12-01"
    if days["from"] and days["to"] and days["from"] > days["to"]:
        errors["to"] = "must not be before 'from'"
    before = None
    raw_before = (params.get("before") or "").strip()
    if raw_before:
        if not raw_before.isascii() or not raw_before.isdigit() or len(raw_before) > 18:
            errors["before"] = "must be an entry's id, a whole number written with digits 0-9"
        else:
            before = int(raw_before)
    limit = PAGE_SIZE
    raw_limit = (params.get("limit") or "").strip()
    if raw_limit:
        if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE_SIZE:
            errors["limit"] = f"must be a whole number from 1 to {MAX_PAGE_SIZE}"
        else:
            limit = int(raw_limit)
    if errors:
        raise InputError(errors)
    return AuditFilters(
        person=person, action=action, since=days["from"], until=days["to"], limit=limit, before=before
    )


def _day(raw: str) -> date | None:
    # Exactly YYYY-MM-DD: fromisoformat alone also takes 20261201 and week dates.
    if len(raw) != 10 or raw[4] != "-" or raw[7] != "-":
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None


def audit_log(user: AbstractBaseUser, team: Team, filters: AuditFilters) -> QuerySet[AuditEvent]:
    """The team's events matching ``filters``, newest first; only the team's admins may read it.

    ``team`` comes from ``team_for`` (so another team is already a 404); a lower role is a 403.
    """
    require_role(user, team.id, Role.ADMIN)
    events = AuditEvent.objects.filter(team=team)
    if filters.person:
        events = events.filter(actor_label=filters.person)
    if filters.action:
        events = events.filter(action=filters.action)
    if filters.since:
        events = events.filter(created_at__gte=datetime.combine(filters.since, time.min, UTC))
    if filters.until:
        end = datetime.combine(filters.until + timedelta(days=1), time.min, UTC)
        events = events.filter(created_at__lt=end)
    if filters.before is not None:
        # Keyset paging in the log's own order (newest first), so a page never repeats or skips.
        cursor = AuditEvent.objects.filter(team=team, pk=filters.before).values("created_at").first()
        if cursor is None:
            raise InputError({"before": "no such entry in this team's log"})
        events = events.filter(
            Q(created_at__lt=cursor["created_at"]) | Q(created_at=cursor["created_at"], pk__lt=filters.before)
        )
    return events.order_by("-created_at", "-id")[: filters.limit]


def event_json(event: AuditEvent) -> dict:
    return {
        "id": event.id,
        "action": event.action,
        "actor": {"id": event.actor_id, "username": event.actor_label} if event.actor_label else None,
        "target": {"type": event.target_type, "id": event.target_id, "label": event.target_label}
        if event.target_type
        else None,
        "details": event.details,
        "created_at": event.created_at.isoformat(),
    }
