from django.urls import re_path

from webapp.mlflow_api import views

app_name = "mlflow"

# One view for every MLflow path: an unknown one still answers in MLflow's error shape.
urlpatterns = [re_path(r"^(?P<path>.*)$", views.endpoint, name="endpoint")]
