from django.urls import path

from webapp.api import evals, views

app_name = "api"

urlpatterns = [
    path("projects", views.projects, name="projects"),
    path("projects/<int:project_id>/runs", views.project_runs, name="project_runs"),
    path("runs/<int:run_id>", views.run, name="run"),
    path("runs/<int:run_id>/metrics", views.run_metrics, name="run_metrics"),
    path("runs/<int:run_id>/cancel", views.run_cancel, name="run_cancel"),
    path("config/estimate", views.config_estimate, name="config_estimate"),
    path("teams", views.teams, name="teams"),
    path("projects/<int:project_id>/evals", evals.project_evals, name="project_evals"),
    path("evals/<int:job_id>", evals.eval_job, name="eval_job"),
    path("evals/<int:job_id>/cancel", evals.eval_job_cancel, name="eval_job_cancel"),
]
