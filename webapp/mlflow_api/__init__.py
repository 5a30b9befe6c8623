"""MLflow's tracking REST API (the logging part) over Runwright's external runs: see ``views``."""
