from django.urls import path

from webapp.fleet import views

app_name = "fleet"

urlpatterns = [
    path("fleet/", views.fleet, name="fleet"),
    path("fleet/quotas/<int:team_id>", views.set_quota, name="set_quota"),
]
