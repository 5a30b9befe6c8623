from django.urls import path

from webapp.runs import actions as run_actions
from webapp.runs import downloads, views
from webapp.samples import views as samples

app_name = "runs"

urlpatterns = [
    path("projects/<int:project_id>/runs/new", views.new_run, name="new"),
    path("projects/<int:project_id>/compare", views.compare_runs, name="compare"),
    path("projects/<int:project_id>/compare/series", views.compare_series, name="compare_series"),
    path("runs/<int:run_id>/", views.run_detail, name="detail"),
    path("runs/<int:run_id>/series", views.run_series, name="series"),
    path("runs/<int:run_id>/cancel", views.cancel_run, name="cancel"),
    path("runs/<int:run_id>/resume", run_actions.resume, name="resume"),
    path("runs/<int:run_id>/restart", run_actions.restart, name="restart"),
    path("runs/<int:run_id>/archive", run_actions.archive, name="archive"),
    path("runs/<int:run_id>/unarchive", run_actions.unarchive, name="unarchive"),
    path("runs/<int:run_id>/delete", run_actions.delete, name="delete"),
    path("runs/<int:run_id>/stream", views.run_stream, name="stream"),
    path("runs/<int:run_id>/series.csv", downloads.run_series_csv, name="series_csv"),
    path("runs/<int:run_id>/samples", views.run_samples, name="samples"),
    path("runs/<int:run_id>/checkpoints", views.run_checkpoints, name="checkpoints"),
    path("runs/<int:run_id>/files/<path:name>", downloads.run_file_download, name="file"),
    path(
        "runs/<int:run_id>/checkpoints/<int:step>/download",
        downloads.checkpoint_download,
        name="checkpoint_download",
    ),
    # Sampling from and exporting a checkpoint (webapp.samples): worker jobs kept in the run's history.
    path("runs/<int:run_id>/sample", samples.start_sample, name="sample_start"),
    path("runs/<int:run_id>/sample-jobs", samples.run_sample_jobs, name="sample_jobs"),
    path("runs/<int:run_id>/checkpoints/<int:step>/export", samples.start_export, name="checkpoint_export"),
    path("sample-jobs/<int:job_id>/", samples.job_status, name="sample_status"),
    path("sample-jobs/<int:job_id>/stream", samples.job_stream, name="sample_stream"),
    path("sample-jobs/<int:job_id>/archive", samples.export_archive, name="sample_archive"),
    path("sample-jobs/<int:job_id>/cancel", samples.cancel_job, name="sample_cancel"),
    path(
        "projects/<int:project_id>/compare/series.csv",
        downloads.compare_series_csv,
        name="compare_series_csv",
    ),
]
