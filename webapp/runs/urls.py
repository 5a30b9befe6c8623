from django.urls import path

from webapp.runs import downloads, views

app_name = "runs"

urlpatterns = [
    path("projects/<int:project_id>/runs/new", views.new_run, name="new"),
    path("projects/<int:project_id>/compare", views.compare_runs, name="compare"),
    path("projects/<int:project_id>/compare/series", views.compare_series, name="compare_series"),
    path("runs/<int:run_id>/", views.run_detail, name="detail"),
    path("runs/<int:run_id>/series", views.run_series, name="series"),
    path("runs/<int:run_id>/cancel", views.cancel_run, name="cancel"),
    path("runs/<int:run_id>/stream", views.run_stream, name="stream"),
    path("runs/<int:run_id>/series.csv", downloads.run_series_csv, name="series_csv"),
    path(
        "projects/<int:project_id>/compare/series.csv",
        downloads.compare_series_csv,
        name="compare_series_csv",
    ),
]
