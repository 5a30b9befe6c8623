"""Progress events: ``done`` counts the same unit as ``total`` and ends exactly there."""

from __future__ import annotations

import json

from conftest import TINY_MAX_POSITIONS

from modelcore.evaluation.runner import EvalSettings, evaluate_task
from modelcore.evaluation.scoring import score_rolling
from modelcore.evaluation.taskconfig import load_task_config

# Of different lengths, each longer than the model's window, so documents take several
# windows and their windows land in different length-sorted batches.
TEXTS = [
    " ".join(f"Story {d}, line {i}: the fox ran {i * d} miles." for i in range(n))
    for d, n in enumerate((4, 7, 11, 16))
]


def _check_counts(reported: list[int], total: int) -> None:
    assert reported and all(n > 0 for n in reported)  # increments only: the bar never goes back
    running = 0
    for n in reported:
        running += n
        assert running <= total
    assert running == total


def test_rolling_scoring_reports_progress_in_texts_not_windows(tiny_hf_model):
    assert all(len(tiny_hf_model.encode(t)) > TINY_MAX_POSITIONS for t in TEXTS)
    seen: list[int] = []
    score_rolling(tiny_hf_model, TEXTS, batch_size=2, progress=seen.append)
    assert len(seen) > 1
    _check_counts(seen, len(TEXTS))
    # A repeated text's windows are scored once, and the count still ends at the number of texts.
    seen.clear()
    score_rolling(tiny_hf_model, [*TEXTS, TEXTS[2]], batch_size=2, progress=seen.append)
    _check_counts(seen, len(TEXTS) + 1)


def test_rolling_task_progress_never_passes_its_total(tiny_hf_model, tmp_path):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    (tmp_path / "long.yaml").write_text(
        f"task: long\ndataset_path: json\ndataset_kwargs: {{data_files: {{test: {tmp_path / 'd.jsonl'}}}}}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_target: text\n"
    )
    events: list[dict] = []
    evaluate_task(
        tiny_hf_model, load_task_config(tmp_path / "long.yaml"), EvalSettings(batch_size=2), events.append
    )
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(e["total"] == len(TEXTS) for e in progress)
    done = [e["done"] for e in progress]
    assert all(d <= len(TEXTS) for d in done) and done == sorted(done)
    assert done[-1] == len(TEXTS)
