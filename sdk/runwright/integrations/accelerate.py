"""An Accelerate tracker that logs into Runwright from the main process.

    from accelerate import Accelerator
    from runwright.integrations.accelerate import RunwrightTracker

    accelerator = Accelerator(log_with=RunwrightTracker(project="llm", name="ddp-run"))
    accelerator.init_trackers("llm", config={"lr": 3e-4})
    accelerator.log({"train/loss": loss.item()}, step=step)
    accelerator.end_training()

Only the main process (rank 0) creates the run and logs; the others do nothing, so a
multi-process launch logs one run. URL, token and mode come from the environment
(``RUNWRIGHT_URL``, ``RUNWRIGHT_TOKEN``, ``RUNWRIGHT_MODE``) or from ``init_options``.
"""

from __future__ import annotations

from typing import Any

from accelerate.state import PartialState
from accelerate.tracking import GeneralTracker

import runwright
from runwright.run import Run


class RunwrightTracker(GeneralTracker):
    name = "runwright"
    requires_logging_directory = False
    main_process_only = True

    def __init__(
        self,
        project: str | int,
        name: str = "",
        config: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        **init_options: Any,
    ):
        super().__init__()
        self.project = project
        self.run_name = name
        self.config = dict(config or {})
        self.tags = list(tags or [])
        self.init_options = init_options
        self.run: Run | None = None

    def start(self) -> None:
        """Called by ``init_trackers`` (main process only): the run is created here, not at construction."""
        if self.run is None and PartialState().is_main_process:
            self.run = runwright.init(
                self.project, self.run_name, self.config, self.tags, **self.init_options
            )

    @property
    def tracker(self) -> Run | None:
        return self.run

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.update_config(values)

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Numbers become points; text values become lines of the run's log."""
        if self.run is None:
            return
        numbers = {k: v for k, v in values.items() if not isinstance(v, str)}
        if numbers:
            self.run.log(numbers, step=step)
        for key, text in values.items():
            if isinstance(text, str):
                self.run.log_text(f"{key}: {text}")

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
