"""Teams, their members, invites and audit log over the API (paths are stable; issue 11).

The same services as the team pages: ``webapp.accounts.services`` writes, the selectors read.
Every list is paged (``?limit=``, ``?cursor=``, ``next_cursor``); the members and invites
answers keep their one key and gained ``next_cursor`` beside it, so a client reading the
list still reads the first page.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Case, IntegerField, When
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from ninja import Query, Router, Schema, Status
from pydantic import Field

from webapp.accounts.models import Invite, Membership, Role, Team
from webapp.accounts.selectors import (
    invite_of_team,
    members_of,
    pending_invites,
    role_in_team,
    teams_with_roles,
)
from webapp.accounts.services import (
    accept_invite,
    change_role,
    create_invite,
    create_team,
    delete_team,
    remove_member,
    rename_team,
    revoke_invite,
)
from webapp.api.auth import ApiAuth
from webapp.api.fields import Text, WholeNumber
from webapp.api.lookups import team_admin, team_of
from webapp.api.pages import PageQuery, keyset_page
from webapp.api.schemas import NoFields, Open, RequestBody, answers
from webapp.audit.selectors import audit_log, event_json, parse_filters
from webapp.input_errors import InputError
from webapp.projects.models import Project

router = Router(tags=["teams"])
BY_TEAM = ApiAuth(guard=team_of)
ADMIN = ApiAuth(guard=team_admin)


class TeamOut(Schema):
    id: int
    name: str
    role: str | None
    created_at: str


class TeamRow(TeamOut):
    members: int


class TeamList(Schema):
    teams: list[TeamRow]
    next_cursor: str | None


class UserRef(Schema):
    id: int
    username: str


class Member(Schema):
    user: UserRef
    role: str


class ProjectRef(Schema):
    id: int
    name: str


class TeamDetail(TeamOut):
    members: list[Member]
    projects: list[ProjectRef]


class InviteOut(Schema):
    id: int
    role: str
    created_by: str | None
    created_at: str
    expires_at: str


class NewInvite(Schema):
    id: int
    role: str
    url: str
    token: str = Field(description="the secret; shown this once")
    expires_at: str


class NameIn(RequestBody):
    name: Text | None = None


class InviteIn(RequestBody):
    role: Text = Field(Role.MEMBER, description=f"one of {', '.join(Role.values)}")
    expires_in_days: WholeNumber | None = None


class RoleIn(RequestBody):
    role: Text | None = Field(None, description=f"one of {', '.join(Role.values)} (required)")


def team_json(team: Team, role: str | None) -> dict[str, Any]:
    return {"id": team.id, "name": team.name, "role": role, "created_at": team.created_at.isoformat()}


def member_json(membership: Membership) -> dict[str, Any]:
    return {
        "user": {"id": membership.user_id, "username": membership.user.get_username()},
        "role": membership.role,
    }


def invite_json(invite: Invite) -> dict[str, Any]:
    return {
        "id": invite.id,
        "role": invite.role,
        "created_by": invite.created_by.get_username() if invite.created_by else None,
        "created_at": invite.created_at.isoformat(),
        "expires_at": invite.expires_at.isoformat(),
    }


@router.get("teams", response=answers({200: TeamList}), url_name="teams")
def teams(request: HttpRequest, params: Query[PageQuery]) -> dict[str, Any]:
    """Your teams, by name, with your role and their member counts."""
    page = keyset_page(teams_with_roles(request.user), ("team__name", "id"), params)
    rows = [{**team_json(m.team, m.role), "members": m.member_count} for m in page.rows]
    return {"teams": rows, "next_cursor": page.next_cursor}


@router.post("teams", response=answers({201: TeamOut}), url_name="teams")
def new_team(request: HttpRequest, payload: NameIn | None = None) -> Status:
    """A team with you as its admin."""
    team = create_team(user=request.user, name=(payload.name if payload else None) or "")
    return Status(201, team_json(team, Role.ADMIN))


@router.get("teams/{int:team_id}", response=answers({200: TeamDetail}), url_name="team", auth=BY_TEAM)
def team(request: HttpRequest, team_id: int) -> dict[str, Any]:
    found = team_of(request, team_id)
    projects = Project.objects.filter(team=found).order_by("name")
    return {
        **team_json(found, role_in_team(request.user, found.id)),
        "members": [member_json(m) for m in members_of(found)],
        "projects": [{"id": p.id, "name": p.name} for p in projects],
    }


@router.patch("teams/{int:team_id}", response=answers({200: TeamOut}), url_name="team", auth=BY_TEAM)
def rename(request: HttpRequest, team_id: int, payload: NameIn | None = None) -> dict[str, Any]:
    """Admins rename the team: ``{"name": "..."}``."""
    found = team_of(request, team_id)
    if payload is None or payload.name is None:
        raise InputError({"name": "is required"})
    rename_team(actor=request.user, team=found, name=payload.name)
    return team_json(found, role_in_team(request.user, found.id))


@router.delete("teams/{int:team_id}", response=answers({204: None}), url_name="team", auth=BY_TEAM)
def remove_team(request: HttpRequest, team_id: int) -> HttpResponse:
    delete_team(actor=request.user, team=team_of(request, team_id))
    return HttpResponse(status=204)


class InviteList(Schema):
    invites: list[InviteOut]
    next_cursor: str | None


@router.get(
    "teams/{int:team_id}/invites", response=answers({200: InviteList}), url_name="team_invites", auth=ADMIN
)
def team_invites(request: HttpRequest, team_id: int, params: Query[PageQuery]) -> dict[str, Any]:
    """Invites that can still be used, newest first (admins)."""
    page = keyset_page(pending_invites(team_of(request, team_id)), ("-created_at", "-id"), params)
    return {"invites": [invite_json(i) for i in page.rows], "next_cursor": page.next_cursor}


@router.post(
    "teams/{int:team_id}/invites", response=answers({201: NewInvite}), url_name="team_invites", auth=ADMIN
)
def new_invite(request: HttpRequest, team_id: int, payload: InviteIn | None = None) -> Status:
    """An invite link (admins); its secret is shown once."""
    payload = payload or InviteIn()
    days = {"days": payload.expires_in_days} if payload.expires_in_days is not None else {}
    invite, secret = create_invite(
        actor=request.user, team=team_of(request, team_id), role=payload.role, **days
    )
    url = request.build_absolute_uri(reverse("accounts:invite", kwargs={"token": secret}))
    return Status(
        201,
        {
            "id": invite.id,
            "role": invite.role,
            "url": url,
            "token": secret,
            "expires_at": invite.expires_at.isoformat(),
        },
    )


@router.delete(
    "teams/{int:team_id}/invites/{int:invite_id}",
    response=answers({204: None}),
    url_name="team_invite",
    auth=ADMIN,
)
def team_invite(request: HttpRequest, team_id: int, invite_id: int) -> HttpResponse:
    revoke_invite(actor=request.user, invite=invite_of_team(team_of(request, team_id), invite_id))
    return HttpResponse(status=204)


class Joined(Schema):
    team: TeamOut


@router.post("invites/{str:token}/accept", response=answers({201: Joined}), url_name="invite_accept")
def invite_accept(request: HttpRequest, token: str, payload: NoFields | None = None) -> Status:
    """Join the invite's team with its role."""
    membership = accept_invite(user=request.user, secret=token)
    return Status(201, {"team": team_json(membership.team, membership.role)})


class MemberList(Schema):
    members: list[Member]
    next_cursor: str | None


# The members' order (admins first, then by name) as a value a cursor can carry.
ROLE_ORDER = Case(
    *(When(role=role, then=-Role.rank(role)) for role in Role.values),
    default=0,
    output_field=IntegerField(),
)


@router.get(
    "teams/{int:team_id}/members", response=answers({200: MemberList}), url_name="team_members", auth=BY_TEAM
)
def team_members(request: HttpRequest, team_id: int, params: Query[PageQuery]) -> dict[str, Any]:
    """The team's members, admins first."""
    members = members_of(team_of(request, team_id)).annotate(role_order=ROLE_ORDER)
    page = keyset_page(members, ("role_order", "user__username", "id"), params)
    return {"members": [member_json(m) for m in page.rows], "next_cursor": page.next_cursor}


def _member_of(team: Team, user_id: int) -> AbstractBaseUser:
    """The team's member with that id; anyone else (or no one) is a 404."""
    membership = Membership.objects.filter(team=team, user_id=user_id).select_related("user").first()
    if membership is None:
        raise Http404("No such member.")
    return membership.user


def _member_guard(request: HttpRequest, team_id: int, user_id: int) -> None:
    _member_of(team_of(request, team_id), user_id)


def _role_change_guard(request: HttpRequest, team_id: int, user_id: int) -> None:
    _member_of(team_of(request, team_id), user_id)
    team_admin(request, team_id)


@router.patch(
    "teams/{int:team_id}/members/{int:user_id}",
    response=answers({200: Member}),
    url_name="team_member",
    auth=ApiAuth(guard=_role_change_guard),
)
def change_member_role(
    request: HttpRequest, team_id: int, user_id: int, payload: RoleIn | None = None
) -> dict[str, Any]:
    """Admins change a member's role: ``{"role": "viewer" | "member" | "admin"}``."""
    found = team_of(request, team_id)
    if payload is None or payload.role is None:
        raise InputError({"role": f"is required: one of {', '.join(Role.values)}"})
    member = _member_of(found, user_id)
    return member_json(change_role(actor=request.user, team=found, user_id=member.pk, role=payload.role))


@router.delete(
    "teams/{int:team_id}/members/{int:user_id}",
    response=answers({204: None}),
    url_name="team_member",
    auth=ApiAuth(guard=_member_guard),
)
def remove_team_member(request: HttpRequest, team_id: int, user_id: int) -> HttpResponse:
    """Admins remove a member; a member removes themself (leaves)."""
    found = team_of(request, team_id)
    remove_member(actor=request.user, team=found, user_id=_member_of(found, user_id).pk)
    return HttpResponse(status=204)


class AuditQuery(Schema):
    person: str = Field("", description="a username")
    action: str = Field("", description="one kind of event")
    from_: str = Field("", alias="from", description="from this UTC day, YYYY-MM-DD")
    to: str = Field("", description="to this UTC day, inclusive")
    limit: str = Field("", description="entries per page")
    cursor: str = Field("", description="the previous page's next_cursor")
    before: str = Field("", description="the same as cursor (older name)")


class AuditEventOut(Open):
    id: int
    action: str
    actor: dict[str, Any] | None
    target: dict[str, Any] | None
    details: dict[str, Any]
    created_at: str


class AuditPage(Schema):
    events: list[AuditEventOut]
    next_cursor: str | None
    next_before: int | None


@router.get(
    "teams/{int:team_id}/audit", response=answers({200: AuditPage}), url_name="team_audit", auth=ADMIN
)
def team_audit(request: HttpRequest, team_id: int, params: Query[AuditQuery]) -> dict[str, Any]:
    """The team's audit log, newest first (admins)."""
    query = {k: v for k, v in request.GET.items() if k != "cursor"}
    if params.cursor:
        query["before"] = params.cursor
    filters = parse_filters(query)
    events = list(audit_log(request.user, team_of(request, team_id), filters))
    # A full page may have more behind it: ask again with cursor=<the last id>.
    last = events[-1].id if events and len(events) == filters.limit else None
    return {
        "events": [event_json(e) for e in events],
        "next_cursor": str(last) if last else None,
        "next_before": last,
    }
