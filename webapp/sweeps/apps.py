from django.apps import AppConfig


class SweepsConfig(AppConfig):
    name = "webapp.sweeps"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # A run of a sweep that moves on (a step logged, an end) lets the sweep launch or halve.
        from webapp.runs.transitions import run_changed
        from webapp.sweeps.services import on_run_changed

        run_changed.connect(on_run_changed, dispatch_uid="sweeps.on_run_changed")
