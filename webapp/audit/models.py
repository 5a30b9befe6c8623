"""The team's audit log: who did what to which object, and when (issue 11)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.accounts.models import Team


class Action(models.TextChoices):
    """Every action the log records; the value is what filters and the API use."""

    RUN_LAUNCHED = "run.launched", "Run launched"
    RUN_CANCELLED = "run.cancelled", "Run cancelled"
    RUN_RESUMED = "run.resumed", "Run resumed"
    RUN_DELETED = "run.deleted", "Run deleted"
    MEMBER_INVITED = "member.invited", "Member invited"
    MEMBER_JOINED = "member.joined", "Member joined"
    MEMBER_REMOVED = "member.removed", "Member removed"
    MEMBER_ROLE_CHANGED = "member.role_changed", "Role changed"
    INVITE_REVOKED = "invite.revoked", "Invite revoked"
    TOKEN_CREATED = "token.created", "Token created"
    TOKEN_REVOKED = "token.revoked", "Token revoked"
    PROJECT_MOVED = "project.moved", "Project moved"
    PROJECT_DELETED = "project.deleted", "Project deleted"
    TASKS_UPLOADED = "tasks.uploaded", "Task folder uploaded"
    TEAM_CREATED = "team.created", "Team created"
    TEAM_RENAMED = "team.renamed", "Team renamed"
    TEAM_DELETED = "team.deleted", "Team deleted"
    SWEEP_CREATED = "sweep.created", "Sweep created"
    SWEEP_CANCELLED = "sweep.cancelled", "Sweep cancelled"
    SWEEP_COMPLETED = "sweep.completed", "Sweep completed"


class AuditEvent(models.Model):
    """One recorded action. Labels are copied so the entry still reads after the object is gone."""

    # Kept when the team is deleted (``team.deleted`` and the entries before it stay for the
    # operator); no team's log page shows them any more.
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    # Kept when the person is deleted: the log must still say that someone did it.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=40, choices=Action.choices)
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The log page's filters: newest first within a team, by action or by person.
            models.Index(fields=["team", "-created_at"], name="audit_team_time"),
            models.Index(fields=["team", "action", "-created_at"], name="audit_team_action_time"),
            models.Index(fields=["team", "actor", "-created_at"], name="audit_team_actor_time"),
        ]

    @property
    def target_kind(self) -> str:
        """The target's kind as a person reads it ("token", not the model's "apitoken")."""
        return {"apitoken": "token"}.get(self.target_type, self.target_type)

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.target_type}:{self.target_label}"
