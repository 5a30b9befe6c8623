from django.urls import path

from webapp.api import alerts, evals, external, run_annotations, sweeps, teams, tokens, views
from webapp.api.run_actions import run_archive, run_restart, run_resume, run_unarchive

app_name = "api"

urlpatterns = [
    path("projects", views.projects, name="projects"),
    path("projects/<int:project_id>", views.project, name="project"),
    path("projects/<int:project_id>/runs", views.project_runs, name="project_runs"),
    path("runs/<int:run_id>", views.run, name="run"),
    path("runs/<int:run_id>/alerts", alerts.run_alerts, name="run_alerts"),
    path("projects/<int:project_id>/alerts", alerts.project_alerts, name="project_alerts"),
    path("projects/<int:project_id>/alerts/<int:rule_id>", alerts.project_alert, name="project_alert"),
    path("runs/<int:run_id>/metrics", views.run_metrics, name="run_metrics"),
    path("runs/<int:run_id>/cancel", views.run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/resume", run_resume, name="run_resume"),
    path("runs/<int:run_id>/restart", run_restart, name="run_restart"),
    path("runs/<int:run_id>/archive", run_archive, name="run_archive"),
    path("runs/<int:run_id>/unarchive", run_unarchive, name="run_unarchive"),
    path("runs/<int:run_id>/events", external.run_events, name="run_events"),
    path("runs/<int:run_id>/logs", external.run_logs, name="run_logs"),
    path("runs/<int:run_id>/heartbeat", external.run_heartbeat, name="run_heartbeat"),
    path("runs/<int:run_id>/status", external.run_status, name="run_status"),
    path("runs/<int:run_id>/params", external.run_params, name="run_params"),
    path("runs/<int:run_id>/tags", run_annotations.tags, name="run_tags"),
    path("runs/<int:run_id>/note", run_annotations.note, name="run_note"),
    path("config/estimate", views.config_estimate, name="config_estimate"),
    path("teams", teams.teams, name="teams"),
    path("teams/<int:team_id>", teams.team, name="team"),
    path("teams/<int:team_id>/invites", teams.team_invites, name="team_invites"),
    path("teams/<int:team_id>/invites/<int:invite_id>", teams.team_invite, name="team_invite"),
    path("invites/<str:token>/accept", teams.invite_accept, name="invite_accept"),
    path("teams/<int:team_id>/members", teams.team_members, name="team_members"),
    path("teams/<int:team_id>/members/<int:user_id>", teams.team_member, name="team_member"),
    path("teams/<int:team_id>/audit", teams.team_audit, name="team_audit"),
    path("tokens", tokens.tokens, name="tokens"),
    path("tokens/<int:token_id>", tokens.token_revoke, name="token"),
    path("projects/<int:project_id>/evals", evals.project_evals, name="project_evals"),
    path("evals/<int:job_id>", evals.eval_job, name="eval_job"),
    path("evals/<int:job_id>/cancel", evals.eval_job_cancel, name="eval_job_cancel"),
    path("projects/<int:project_id>/sweeps", sweeps.project_sweeps, name="project_sweeps"),
    path("sweeps/<int:sweep_id>", sweeps.sweep, name="sweep"),
    path("sweeps/<int:sweep_id>/cancel", sweeps.sweep_cancel, name="sweep_cancel"),
]
