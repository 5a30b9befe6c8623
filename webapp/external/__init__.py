"""External runs: trained outside Runwright, reported over the API (the SDK, ``runwright sync``, MLflow clients)."""
