"""The project's URLs plus the evals app's (a no-op once webapp/urls.py includes them)."""

from django.urls import include, path

from webapp.urls import handler400, handler403, handler404, handler500  # noqa: F401
from webapp.urls import urlpatterns as project_urls

_included = any(getattr(p, "app_name", None) == "evals" for p in project_urls)
urlpatterns = project_urls if _included else [*project_urls, path("", include("webapp.evals.urls"))]
