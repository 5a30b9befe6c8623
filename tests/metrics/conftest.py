from __future__ import annotations

import pytest

from modelcore.config import preset
from webapp.accounts.models import Team
from webapp.projects.models import Project
from webapp.runs.models import Run


@pytest.fixture
def run(db) -> Run:
    project = Project.objects.create(team=Team.objects.create(name="metrics-team"), name="metrics")
    return Run.objects.create(project=project, name="r", config=preset("tiny-cpu").to_dict())
