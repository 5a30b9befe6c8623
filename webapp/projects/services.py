"""Writes for projects."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from webapp.accounts.models import Role, Team
from webapp.accounts.permissions import has_role, require_role
from webapp.accounts.selectors import teams_of
from webapp.accounts.services import ensure_personal_team
from webapp.audit.models import Action
from webapp.audit.services import record_action
from webapp.evals.models import ACTIVE_EVAL_STATUSES, EvalJob
from webapp.input_errors import InputError
from webapp.projects.models import Project
from webapp.runs.models import ACTIVE_STATUSES, Run

# The one remover of a deleted run's folder (logs, never raises): a project's runs go the same way.
from webapp.runs.services import _remove_run_dir as _remove_dir


@transaction.atomic
def create_project(
    *, user: AbstractBaseUser, name: str, team: Team | None = None, description: str = ""
) -> Project:
    """Create a project in ``team`` (the user must be a member there).

    Without a team, the user's only team where they may launch is used; a user
    with none gets a personal team, so a fresh account can start right away.
    """
    name = (name or "").strip()
    if not name:
        raise InputError({"name": "must not be empty"})
    if len(name) > 100:
        raise InputError({"name": "must be at most 100 characters"})
    if team is None:
        teams = list(teams_of(user, min_role=Role.MEMBER)[:2])
        if len(teams) > 1:
            raise InputError({"team": "you are in several teams; choose one"})
        team = teams[0] if teams else ensure_personal_team(user)
    # The team's row is locked as delete_team locks it: a delete at the same moment either
    # ends first (the team is gone: a field error, not the foreign key's IntegrityError) or
    # waits and then finds this project and refuses. Two creates of one name queue here too.
    locked = lock_team(team)
    require_role(user, locked.id, Role.MEMBER)
    if Project.objects.filter(team=locked, name=name).exists():
        raise InputError({"name": f"team {locked.name} already has a project named {name!r}"})
    return Project.objects.create(team=locked, name=name, description=description.strip(), created_by=user)


def lock_team(team: Team, field: str = "team") -> Team:
    """``team``'s row, locked until the caller's transaction ends; gone is a field error."""
    locked = Team.objects.select_for_update().filter(pk=team.pk).first()
    if locked is None:
        raise InputError({field: f"team {team.name} no longer exists (it was just deleted)"})
    return locked


@transaction.atomic
def move_project(*, user: AbstractBaseUser, project: Project, team: Team) -> Project:
    """Move ``project`` (and with it its runs and eval jobs) to another team ``user`` administers."""
    require_role(user, project.team_id, Role.ADMIN)
    if not has_role(user, team.id, Role.ADMIN):
        raise InputError({"team": "you can move a project only to a team you administer"})
    if team.id == project.team_id:
        raise InputError({"team": f"the project is already in {team.name}"})
    team = lock_team(team)  # as in create_project: a team deleted meanwhile is a field error
    if Project.objects.filter(team=team, name=project.name).exists():
        raise InputError({"team": f"team {team.name} already has a project named {project.name!r}"})
    source = project.team
    project.team = team
    project.save(update_fields=["team"])
    details = {"from_team": source.name, "to_team": team.name}
    # Both teams' logs show it: one lost the project, the other gained it.
    record_action(team=source, actor=user, action=Action.PROJECT_MOVED, target=project, details=details)
    record_action(team=team, actor=user, action=Action.PROJECT_MOVED, target=project, details=details)
    return project


def delete_project(*, user: AbstractBaseUser, project: Project) -> None:
    """Delete a project with its runs, eval jobs, reports and alert rules, then their folders.

    Team admins only. Refused while one of its runs or eval jobs is active (a worker still
    writes its folder): cancel them first. The project row is locked in the deleting
    transaction, and the active check reads under that lock, so a launch that commits first
    refuses the delete. The folders go only once the delete has committed.
    """
    require_role(user, project.team_id, Role.ADMIN)
    with transaction.atomic():
        locked = Project.objects.select_for_update().filter(pk=project.pk).select_related("team").first()
        if locked is None:
            return  # deleted meanwhile
        active = list(
            Run.objects.filter(project=locked, status__in=ACTIVE_STATUSES)
            .order_by("id")
            .values_list("name", "status")
        )
        if active:
            listed = ", ".join(f"{name} ({status})" for name, status in active[:10])
            more = f" and {len(active) - 10} more" if len(active) > 10 else ""
            raise InputError(
                {
                    "project": f"runs are still active: {listed}{more}; cancel them and wait for them to stop first"
                }
            )
        if EvalJob.objects.filter(project=locked, status__in=ACTIVE_EVAL_STATUSES).exists():
            raise InputError({"project": "evaluation jobs are still active; cancel them first"})
        folders = [run.run_dir for run in Run.objects.filter(project=locked).only("id")]
        folders += [job.job_dir for job in EvalJob.objects.filter(project=locked).only("id")]
        record_action(
            team=locked.team,
            actor=user,
            action=Action.PROJECT_DELETED,
            target=locked,
            details={"runs": Run.objects.filter(project=locked).count(), "team": locked.team.name},
        )
        locked.delete()
        transaction.on_commit(lambda: [_remove_dir(path) for path in folders])
