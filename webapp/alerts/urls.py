from django.urls import path

from webapp.alerts import views

app_name = "alerts"

urlpatterns = [
    path("projects/<int:project_id>/alerts", views.project_alerts, name="project"),
    path("alerts/<int:rule_id>/delete", views.delete_alert_rule, name="delete"),
]
