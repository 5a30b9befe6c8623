"""Log training runs into a Runwright server from anywhere (see sdk/README.md).

    import runwright
    with runwright.init(project="llm", name="laptop", config={"lr": 3e-4}) as run:
        run.log({"train/loss": 2.3}, step=10)

Standard library only; the Accelerate tracker is ``runwright.integrations.accelerate``.
"""

from runwright.run import Run, init
from runwright.sync import sync

__all__ = ["Run", "init", "sync"]
__version__ = "0.1.0"
