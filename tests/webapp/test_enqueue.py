"""The web sends tasks by name through webapp.enqueue; the worker's app is that same app and runs them."""

from __future__ import annotations

from webapp import enqueue


def test_the_worker_registers_every_task_the_web_sends_by_name():
    import workers
    import workers.eval_jobs
    import workers.tasks

    assert workers.app is enqueue.app  # one app, one set of CELERY_* settings
    assert {enqueue.LAUNCH_RUN, enqueue.RUN_EVAL_JOB} <= set(workers.app.tasks)
    assert workers.tasks.launch_run.name == enqueue.LAUNCH_RUN
    assert workers.eval_jobs.run_eval_job.name == enqueue.RUN_EVAL_JOB


def test_only_eval_jobs_follow_eval_queue(settings):
    settings.EVAL_QUEUE = "evals"
    assert enqueue.queue_for(enqueue.RUN_EVAL_JOB) == "evals"
    assert enqueue.queue_for(enqueue.LAUNCH_RUN) is None
    settings.EVAL_QUEUE = ""
    assert enqueue.queue_for(enqueue.RUN_EVAL_JOB) is None
