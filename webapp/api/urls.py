"""``/api/v1/``: the ninja API's routes (``webapp.api.root``) under the names ``api:<name>``."""

from django.urls import path

from webapp.api.docs import docs
from webapp.api.root import api

app_name = "api"

urlpatterns = [*api.urls[0], path("docs", docs, name="docs")]
