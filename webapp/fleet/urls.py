from django.urls import path

from webapp.fleet import views
from webapp.fleet.stream import fleet_stream

app_name = "fleet"

urlpatterns = [
    path("fleet/", views.fleet, name="fleet"),
    path("fleet/data", views.data, name="data"),
    path("fleet/stream", fleet_stream, name="stream"),
    path("fleet/quotas/<int:team_id>", views.set_quota, name="set_quota"),
]
