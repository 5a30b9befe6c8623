from django.urls import path

from webapp.evals import views

app_name = "evals"

urlpatterns = [
    path("projects/<int:project_id>/evals/", views.project_evals, name="project"),
    path("projects/<int:project_id>/evals/new", views.new_eval, name="new"),
    path("projects/<int:project_id>/evals/tasks", views.upload_tasks, name="upload_tasks"),
    path("projects/<int:project_id>/evals/import", views.import_view, name="import"),
    path("projects/<int:project_id>/reports/new", views.report_new, name="report_new"),
    path("runs/<int:run_id>/evaluate", views.run_evaluate, name="run_evaluate"),
    path("runs/<int:run_id>/evals/panel", views.run_panel, name="run_panel"),
    path("evals/<int:job_id>/", views.job_detail, name="job"),
    path("evals/<int:job_id>/status", views.job_status, name="job_status"),
    path("evals/<int:job_id>/stream", views.job_stream, name="job_stream"),
    path("evals/<int:job_id>/cancel", views.job_cancel, name="job_cancel"),
    path("evals/<int:job_id>/results.json", views.job_results, name="job_results"),
    path("reports/<int:report_id>/", views.report_detail, name="report"),
    path("reports/<int:report_id>/edit", views.report_edit, name="report_edit"),
    path("reports/<int:report_id>/delete", views.report_delete, name="report_delete"),
    path("reports/<int:report_id>/disagreements", views.report_disagreements, name="disagreements"),
    path("reports/<int:report_id>/export.<str:fmt>", views.report_export, name="report_export"),
]
