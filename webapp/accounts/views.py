"""Team, invite, sign-up, audit log and token pages: parse, check, call one service, render."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp.accounts.forms import InviteForm, MoveProjectForm, RoleForm, SignUpForm, TeamForm, TokenForm
from webapp.accounts.models import Membership, Role, Team
from webapp.accounts.permissions import has_role, require_role
from webapp.accounts.selectors import (
    invite_of_team,
    members_of,
    pending_invites,
    role_in_team,
    team_for,
    teams_with_roles,
    tokens_of,
)
from webapp.accounts.services import (
    accept_invite,
    change_role,
    create_invite,
    create_team,
    delete_team,
    invite_for_secret,
    invite_problem,
    issue_api_token,
    remove_member,
    rename_team,
    revoke_api_token,
    revoke_invite,
    sign_up,
    team_projects_blocking_delete,
)
from webapp.audit.models import Action
from webapp.audit.selectors import AuditFilters, audit_log, parse_filters
from webapp.input_errors import INPUT_ERRORS
from webapp.projects.selectors import project_for
from webapp.projects.services import move_project

BACKEND = "django.contrib.auth.backends.ModelBackend"


# --- teams ----------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def team_list(request: HttpRequest) -> HttpResponse:
    form = TeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        team = form.submit(create_team, user=request.user, name=form.cleaned_data["name"])
        if team is not None:
            messages.success(request, f"Team {team.name} created; you are its admin.")
            return redirect("accounts:team", team_id=team.id)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "teams/list.html",
        {"memberships": teams_with_roles(request.user), "form": form},
        status=status,
    )


def _team_page(request: HttpRequest, team: Team, *, status: int = 200, **extra) -> HttpResponse:
    role = role_in_team(request.user, team.id)
    is_admin = role == Role.ADMIN
    projects = team.projects.order_by("name")
    context = {
        "team": team,
        "role": role,
        "is_admin": is_admin,
        "members": members_of(team),
        "invites": pending_invites(team) if is_admin else [],
        "projects": projects,
        "roles": Role.choices,
        "invite_form": InviteForm(),
        "move_targets": list(MoveProjectForm(user=request.user, current=team).fields["team"].queryset)
        if is_admin
        else [],
        **extra,
    }
    return render(request, "teams/detail.html", context, status=status)


@login_required
@require_GET
def team_detail(request: HttpRequest, team_id: int) -> HttpResponse:
    return _team_page(request, team_for(request.user, team_id))


def _refused(request: HttpRequest, team: Team, exc: Exception) -> HttpResponse:
    """An action refused for its input: the team page again, with the reason, as a 400."""
    return _team_page(request, team, status=400, action_errors=list(exc.errors.items()))


@login_required
@require_POST
def invite_create(request: HttpRequest, team_id: int) -> HttpResponse:
    team = team_for(request.user, team_id)
    require_role(request.user, team.id, Role.ADMIN)
    form = InviteForm(request.POST)
    if not form.is_valid():
        errors = [(field, " ".join(e)) for field, e in form.errors.items()]
        return _team_page(request, team, status=400, action_errors=errors)
    try:
        invite, secret = create_invite(
            actor=request.user,
            team=team,
            role=form.cleaned_data["role"],
            days=form.cleaned_data["expires_in_days"],
        )
    except INPUT_ERRORS as exc:
        return _refused(request, team, exc)
    url = request.build_absolute_uri(reverse("accounts:invite", kwargs={"token": secret}))
    # The link is shown on this answer only: the server keeps just its hash.
    return _team_page(request, team, new_invite={"url": url, "invite": invite})


@login_required
@require_POST
def invite_revoke(request: HttpRequest, team_id: int, invite_id: int) -> HttpResponse:
    team = team_for(request.user, team_id)
    require_role(request.user, team.id, Role.ADMIN)
    try:
        revoke_invite(actor=request.user, invite=invite_of_team(team, invite_id))
    except INPUT_ERRORS as exc:
        return _refused(request, team, exc)
    messages.success(request, "Invite revoked: its link no longer works.")
    return redirect("accounts:team", team_id=team.id)


def _member(team: Team, user_id: int) -> Membership:
    membership = Membership.objects.filter(team=team, user_id=user_id).select_related("user").first()
    if membership is None:
        raise Http404("No such member.")
    return membership


@login_required
@require_POST
def member_role(request: HttpRequest, team_id: int, user_id: int) -> HttpResponse:
    team = team_for(request.user, team_id)
    require_role(request.user, team.id, Role.ADMIN)
    membership = _member(team, user_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        return _team_page(request, team, status=400, action_errors=[("role", " ".join(form.errors["role"]))])
    try:
        change_role(actor=request.user, team=team, user_id=membership.user_id, role=form.cleaned_data["role"])
    except INPUT_ERRORS as exc:
        return _refused(request, team, exc)
    messages.success(request, f"{membership.user.get_username()} is now {form.cleaned_data['role']}.")
    return redirect("accounts:team", team_id=team.id)


@login_required
@require_POST
def member_remove(request: HttpRequest, team_id: int, user_id: int) -> HttpResponse:
    """An admin removes a member; a member removing themself leaves (``team_leave``)."""
    team = team_for(request.user, team_id)
    membership = _member(team, user_id)
    if membership.user_id != request.user.pk:
        require_role(request.user, team.id, Role.ADMIN)
    try:
        remove_member(actor=request.user, team=team, user_id=membership.user_id)
    except INPUT_ERRORS as exc:
        return _refused(request, team, exc)
    if membership.user_id == request.user.pk:
        messages.success(request, f"You left {team.name}.")
        return redirect("accounts:teams")
    messages.success(request, f"{membership.user.get_username()} was removed from {team.name}.")
    return redirect("accounts:team", team_id=team.id)


@login_required
@require_POST
def team_leave(request: HttpRequest, team_id: int) -> HttpResponse:
    return member_remove(request, team_id=team_id, user_id=request.user.pk)


@login_required
@require_POST
def project_move(request: HttpRequest, team_id: int, project_id: int) -> HttpResponse:
    team = team_for(request.user, team_id)
    project = project_for(request.user, project_id)
    if project.team_id != team.id:
        raise Http404("No such project in this team.")
    require_role(request.user, team.id, Role.ADMIN)
    form = MoveProjectForm(request.POST, user=request.user, current=team)
    if not form.is_valid():
        return _team_page(
            request,
            team,
            status=400,
            action_errors=[
                ("team", "choose a team you administer (other than this one) to move the project to")
            ],
        )
    try:
        move_project(user=request.user, project=project, team=form.cleaned_data["team"])
    except INPUT_ERRORS as exc:
        return _refused(request, team, exc)
    messages.success(request, f"Project {project.name} moved to {form.cleaned_data['team'].name}.")
    return redirect("accounts:team", team_id=team.id)


@login_required
@require_POST
def team_rename(request: HttpRequest, team_id: int) -> HttpResponse:
    team = team_for(request.user, team_id)
    require_role(request.user, team.id, Role.ADMIN)
    form = TeamForm(request.POST)
    if not form.is_valid():
        return _team_page(request, team, status=400, action_errors=[("name", " ".join(form.errors["name"]))])
    try:
        rename_team(actor=request.user, team=team, name=form.cleaned_data["name"])
    except INPUT_ERRORS as exc:
        return _refused(request, team, exc)
    messages.success(request, f"Team renamed to {team.name}.")
    return redirect("accounts:team", team_id=team.id)


@login_required
@require_http_methods(["GET", "POST"])
def team_delete(request: HttpRequest, team_id: int) -> HttpResponse:
    """A confirmation page (GET), then the delete (POST); a team with projects is refused."""
    team = team_for(request.user, team_id)
    require_role(request.user, team.id, Role.ADMIN)
    context = {"team": team, "projects": team_projects_blocking_delete(team)}
    if request.method == "GET":
        return render(request, "teams/delete.html", context)
    try:
        delete_team(actor=request.user, team=team)
    except INPUT_ERRORS as exc:
        context["errors"] = list(exc.errors.values())
        context["projects"] = team_projects_blocking_delete(team)
        return render(request, "teams/delete.html", context, status=400)
    messages.success(request, f"Team {team.name} deleted.")
    return redirect("accounts:teams")


# --- the audit log --------------------------------------------------------------


@login_required
@require_GET
def team_audit(request: HttpRequest, team_id: int) -> HttpResponse:
    team = team_for(request.user, team_id)
    require_role(request.user, team.id, Role.ADMIN)
    context = {
        "team": team,
        "actions": Action.choices,
        "people": members_of(team),
        "params": {k: request.GET.get(k, "") for k in ("person", "action", "from", "to")},
    }
    try:
        filters = parse_filters(request.GET)
    except INPUT_ERRORS as exc:
        context.update(filters=AuditFilters(), events=[], filter_errors=list(exc.errors.items()))
        return render(request, "audit/log.html", context, status=400)
    events = list(audit_log(request.user, team, filters))
    if len(events) == filters.limit:
        context["older"] = urlencode({**filters.as_query(), "before": events[-1].id})
    context.update(filters=filters, events=events)
    return render(request, "audit/log.html", context)


# --- log in, invites and sign-up ---


class LoginView(auth_views.LoginView):
    """Django's log-in page, offering sign-up only where the operator opened it."""

    redirect_authenticated_user = True

    def get_context_data(self, **kwargs) -> dict:
        return {**super().get_context_data(**kwargs), "open_signup": settings.OPEN_SIGNUP}


# --- invites and sign-up ----------------------------------------------------------


@require_http_methods(["GET", "POST"])
def invite(request: HttpRequest, token: str) -> HttpResponse:
    """An invite link: a signed-in person joins; a new person creates an account from it."""
    found = invite_for_secret(token)
    problem = invite_problem(found)
    if problem:
        return render(
            request, "teams/invite.html", {"problem": problem}, status=404 if found is None else 410
        )
    context = {"invite": found, "token": token}
    if request.user.is_authenticated:
        if request.method == "POST":
            try:
                accept_invite(user=request.user, secret=token)
            except INPUT_ERRORS as exc:
                context["problem"] = " ".join(exc.errors.values())
                return render(request, "teams/invite.html", context, status=400)
            messages.success(request, f"Welcome to {found.team.name}: you joined as {found.role}.")
            return redirect("accounts:team", team_id=found.team_id)
        context["already_member"] = has_role(request.user, found.team_id, Role.VIEWER)
        return render(request, "teams/invite.html", context)
    form = SignUpForm(request.POST or None)
    context["form"] = form
    if request.method == "POST" and form.is_valid():
        user = form.submit(
            sign_up,
            username=form.cleaned_data["username"],
            password=form.cleaned_data["password"],
            invite_secret=token,
        )
        if user is not None:
            login(request, user, backend=BACKEND)
            messages.success(request, f"Welcome to {found.team.name}: you joined as {found.role}.")
            return redirect("accounts:team", team_id=found.team_id)
    return render(request, "teams/invite.html", context, status=400 if request.method == "POST" else 200)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Sign-up without an invite, only where the operator set RUNWRIGHT_OPEN_SIGNUP=1."""
    if request.user.is_authenticated:
        return redirect("home")
    if not settings.OPEN_SIGNUP:
        raise PermissionDenied("Accounts are created through an invite link: ask a team admin to invite you.")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.submit(
            sign_up, username=form.cleaned_data["username"], password=form.cleaned_data["password"]
        )
        if user is not None:
            login(request, user, backend=BACKEND)
            messages.success(request, "Account created. Create a team, or ask an admin for an invite.")
            return redirect("accounts:teams")
    return render(
        request, "accounts/signup.html", {"form": form}, status=400 if request.method == "POST" else 200
    )


# --- API tokens -----------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST or None)
    context: dict = {"form": form}
    status = 200
    if request.method == "POST":
        created = None
        if form.is_valid():
            created = form.submit(
                issue_api_token,
                request.user,
                form.cleaned_data["name"],
                expires_in_days=form.cleaned_data["expires_in_days"],
                read_only=form.cleaned_data["read_only"],
            )
        if created is None:
            status = 400
        else:
            # The secret is on this answer only: the server keeps just its hash.
            context["new_token"], context["new_secret"] = created
            context["form"] = TokenForm()
    context["tokens"] = tokens_of(request.user)
    return render(request, "accounts/tokens.html", context, status=status)


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = revoke_api_token(user=request.user, token_id=token_id)
    messages.success(request, f"Token {token.name or token.prefix} revoked: it answers 401 from now on.")
    return redirect("accounts:tokens")
