from django.contrib.auth import views as auth_views
from django.urls import include, path

from webapp.accounts import views as account_views
from webapp.home import views as home_views
from webapp.runs.assets import plotly_basic_js, plotly_js

urlpatterns = [
    # A signed-in person's home: their teams' runs now and since their last visit.
    path("", home_views.home, name="home"),
    path("login/", account_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/", include("webapp.projects.urls")),
    path("", include("webapp.accounts.urls")),
    path("", include("webapp.runs.urls")),
    path("", include("webapp.evals.urls")),
    path("", include("webapp.annotations.urls")),
    path("", include("webapp.alerts.urls")),
    path("", include("webapp.fleet.urls")),
    path("", include("webapp.sweeps.urls")),
    path("api/v1/", include("webapp.api.urls")),
    # MLflow clients (MLFLOW_TRACKING_URI pointed here) and MLflow's UI-style paths.
    path("api/2.0/mlflow/", include("webapp.mlflow_api.urls", namespace="mlflow")),
    path("ajax-api/2.0/mlflow/", include("webapp.mlflow_api.urls", namespace="mlflow_ajax")),
    path("vendor/plotly.min.js", plotly_js, name="plotly_js"),
    path("vendor/plotly-basic.min.js", plotly_basic_js, name="plotly_basic_js"),
]

handler400 = "webapp.errors.bad_request"
handler403 = "webapp.errors.permission_denied"
handler404 = "webapp.errors.page_not_found"
handler500 = "webapp.errors.server_error"
