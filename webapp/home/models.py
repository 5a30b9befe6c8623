"""When each person last looked at their home page, so it can say what changed since."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class LastVisit(models.Model):
    """``seen_at``: the latest view of the home page; ``since``: where the current visit's news starts.

    A visit is a run of views with less than ``home.services.VISIT_GAP`` between them, so a
    reload does not wipe the news the person is still reading.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="last_visit")
    seen_at = models.DateTimeField()
    since = models.DateTimeField(null=True, blank=True)  # None: the first visit
