"""The one write of the home page: note this view, and say where the visit's news starts."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from webapp.home.models import LastVisit

# Views closer together than this are one visit: a reload keeps showing the same news.
VISIT_GAP = dt.timedelta(minutes=30)


def record_visit(user: AbstractBaseUser, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """Store this view of the home page; returns when the previous visit ended (None: the first)."""
    now = now or timezone.now()
    with transaction.atomic():
        visit, created = LastVisit.objects.select_for_update().get_or_create(
            user=user, defaults={"seen_at": now, "since": None}
        )
        if created:
            return None
        if now - visit.seen_at > VISIT_GAP:
            visit.since = visit.seen_at  # a new visit: its news starts where the last one ended
        visit.seen_at = now
        visit.save(update_fields=["seen_at", "since"])
        return visit.since
