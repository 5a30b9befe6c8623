from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from modelcore.config import preset
from webapp.accounts.models import Team
from webapp.projects.models import Project
from webapp.runs.models import Run


@pytest.fixture
def run(db) -> Run:
    project = Project.objects.create(team=Team.objects.create(name="metrics-team"), name="metrics")
    return Run.objects.create(project=project, name="r", config=preset("tiny-cpu").to_dict())


@pytest.fixture
def run_before_migration() -> Callable[[list[tuple[str, str]]], tuple[object, object]]:
    """``run_before_migration(target)``: the schema migrated back to ``target`` and a run made in it.

    Returns the historical apps (to create rows as that schema had them) and the run. Tests
    using it need ``django_db(transaction=True)``, then ``call_command("migrate")`` forward.
    """

    def migrate_back(target: list[tuple[str, str]]) -> tuple[object, object]:
        executor = MigrationExecutor(connection)
        # Every app the target builds on goes back too (runs, projects...): a field another
        # app added since (a NOT NULL column) would refuse the rows made in the old schema.
        graph = executor.loader.graph
        ancestors = {app: name for node in target for app, name in graph.forwards_plan(node)}
        executor.migrate(sorted(ancestors.items()))
        executor.loader.build_graph()
        old = executor.loader.project_state(target).apps
        team = old.get_model("accounts", "Team").objects.create(name="t")
        project = old.get_model("projects", "Project").objects.create(team=team, name="p")
        run = old.get_model("runs", "Run").objects.create(
            project=project, name="r", config=preset("tiny-cpu").to_dict()
        )
        return old, run

    return migrate_back
