from django.urls import path

from webapp.projects import views

app_name = "projects"

urlpatterns = [
    path("", views.project_index, name="list"),
    path("<int:project_id>/", views.project_detail, name="detail"),
    path("<int:project_id>/runs.json", views.project_runs_json, name="runs_json"),
]
