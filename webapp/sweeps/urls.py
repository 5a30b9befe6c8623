from django.urls import path

from webapp.sweeps import views
from webapp.sweeps.stream import sweep_stream

app_name = "sweeps"

urlpatterns = [
    path("projects/<int:project_id>/sweeps/", views.project_sweeps, name="project"),
    path("projects/<int:project_id>/sweeps/new", views.new_sweep, name="new"),
    path("sweeps/<int:sweep_id>/", views.detail, name="detail"),
    path("sweeps/<int:sweep_id>/data", views.data, name="data"),
    path("sweeps/<int:sweep_id>/stream", sweep_stream, name="stream"),
    path("sweeps/<int:sweep_id>/cancel", views.cancel, name="cancel"),
]
