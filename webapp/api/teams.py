"""Teams, their members, invites and audit log over the API (paths are stable; issue 11).

The same services as the team pages: ``webapp.accounts.services`` writes, the selectors read.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from webapp.accounts.models import Invite, Membership, Role, Team
from webapp.accounts.permissions import require_role
from webapp.accounts.selectors import (
    invite_of_team,
    members_of,
    pending_invites,
    role_in_team,
    team_for,
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
from webapp.api.auth import api_view
from webapp.api.body import json_object
from webapp.api.fields import string, whole_number
from webapp.audit.selectors import audit_log, event_json, parse_filters
from webapp.input_errors import InputError
from webapp.projects.models import Project


def team_json(team: Team, role: str | None) -> dict:
    return {"id": team.id, "name": team.name, "role": role, "created_at": team.created_at.isoformat()}


def member_json(membership: Membership) -> dict:
    return {
        "user": {"id": membership.user_id, "username": membership.user.get_username()},
        "role": membership.role,
    }


def invite_json(invite: Invite) -> dict:
    return {
        "id": invite.id,
        "role": invite.role,
        "created_by": invite.created_by.get_username() if invite.created_by else None,
        "created_at": invite.created_at.isoformat(),
        "expires_at": invite.expires_at.isoformat(),
    }


def invite_url(request: HttpRequest, secret: str) -> str:
    return request.build_absolute_uri(reverse("accounts:invite", kwargs={"token": secret}))


@api_view(("GET", "POST"))
def teams(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        rows = teams_with_roles(request.user)
        return JsonResponse(
            {"teams": [{**team_json(m.team, m.role), "members": m.member_count} for m in rows]}
        )
    data = json_object(request, ("name",))
    team = create_team(user=request.user, name=string(data.get("name", ""), "name"))
    return JsonResponse(team_json(team, Role.ADMIN), status=201)


@api_view(("GET", "PATCH", "DELETE"))
def team(request: HttpRequest, team_id: int) -> HttpResponse:
    found = team_for(request.user, team_id)
    if request.method == "PATCH":
        data = json_object(request, ("name",))
        if "name" not in data:
            raise InputError({"name": "is required"})
        rename_team(actor=request.user, team=found, name=string(data["name"], "name"))
        return JsonResponse(team_json(found, role_in_team(request.user, found.id)))
    if request.method == "DELETE":
        delete_team(actor=request.user, team=found)
        return HttpResponse(status=204)
    projects = Project.objects.filter(team=found).order_by("name")
    return JsonResponse(
        {
            **team_json(found, role_in_team(request.user, found.id)),
            "members": [member_json(m) for m in members_of(found)],
            "projects": [{"id": p.id, "name": p.name} for p in projects],
        }
    )


@api_view(("GET", "POST"))
def team_invites(request: HttpRequest, team_id: int) -> JsonResponse:
    found = team_for(request.user, team_id)
    require_role(request.user, found.id, Role.ADMIN)
    if request.method == "GET":
        return JsonResponse({"invites": [invite_json(i) for i in pending_invites(found)]})
    data = json_object(request, ("role", "expires_in_days"))
    days = data.get("expires_in_days")
    invite, secret = create_invite(
        actor=request.user,
        team=found,
        role=string(data.get("role", Role.MEMBER), "role"),
        **({"days": whole_number(days, "expires_in_days")} if days is not None else {}),
    )
    return JsonResponse(
        {
            "id": invite.id,
            "role": invite.role,
            "url": invite_url(request, secret),
            "token": secret,
            "expires_at": invite.expires_at.isoformat(),
        },
        status=201,
    )


@api_view(("DELETE",))
def team_invite(request: HttpRequest, team_id: int, invite_id: int) -> HttpResponse:
    found = team_for(request.user, team_id)
    require_role(request.user, found.id, Role.ADMIN)
    revoke_invite(actor=request.user, invite=invite_of_team(found, invite_id))
    return HttpResponse(status=204)


@api_view(("POST",))
def invite_accept(request: HttpRequest, token: str) -> JsonResponse:
    json_object(request, ())
    membership = accept_invite(user=request.user, secret=token)
    return JsonResponse({"team": team_json(membership.team, membership.role)}, status=201)


@api_view(("GET",))
def team_members(request: HttpRequest, team_id: int) -> JsonResponse:
    found = team_for(request.user, team_id)
    return JsonResponse({"members": [member_json(m) for m in members_of(found)]})


@api_view(("PATCH", "DELETE"))
def team_member(request: HttpRequest, team_id: int, user_id: int) -> HttpResponse:
    found = team_for(request.user, team_id)
    member = _member_of(found, user_id)
    if request.method == "DELETE":
        remove_member(actor=request.user, team=found, user_id=member.pk)
        return HttpResponse(status=204)
    require_role(request.user, found.id, Role.ADMIN)
    data = json_object(request, ("role",))
    if "role" not in data:
        raise InputError({"role": f"is required: one of {', '.join(Role.values)}"})
    membership = change_role(
        actor=request.user, team=found, user_id=member.pk, role=string(data["role"], "role")
    )
    return JsonResponse(member_json(membership))


@api_view(("GET",))
def team_audit(request: HttpRequest, team_id: int) -> JsonResponse:
    found = team_for(request.user, team_id)
    require_role(request.user, found.id, Role.ADMIN)
    filters = parse_filters(request.GET)
    events = list(audit_log(request.user, found, filters))
    # A full page may have more behind it: ask again with before=<the last id>.
    more = len(events) == filters.limit
    return JsonResponse(
        {"events": [event_json(e) for e in events], "next_before": events[-1].id if more else None}
    )


def _member_of(team: Team, user_id: int) -> AbstractBaseUser:
    """The team's member with that id; anyone else (or no one) is a 404."""
    membership = Membership.objects.filter(team=team, user_id=user_id).select_related("user").first()
    if membership is None:
        raise Http404("No such member.")
    return membership.user
