"""Benchmark evaluation of checkpoints, compatible with lm-evaluation-harness.

``taskconfig`` (task YAML) and ``results`` (results JSON) import no torch, so the
web app can list tasks and read results; ``runner.evaluate`` does the scoring.
``python -m modelcore.evaluate`` is the command line.
"""
