from django.urls import path

from webapp.projects import views
from webapp.runs.project_stream import project_runs_stream

app_name = "projects"

urlpatterns = [
    path("", views.project_index, name="list"),
    path("<int:project_id>/", views.project_detail, name="detail"),
    path("<int:project_id>/delete/", views.project_delete, name="delete"),
    path("<int:project_id>/runs.json", views.project_runs_json, name="runs_json"),
    path("<int:project_id>/runs/stream", project_runs_stream, name="runs_stream"),
]
