from django.urls import path

from webapp.annotations import views

app_name = "annotations"

urlpatterns = [
    path("runs/<int:run_id>/tags", views.run_tags, name="tags"),
    path("runs/<int:run_id>/note", views.run_note, name="note"),
]
