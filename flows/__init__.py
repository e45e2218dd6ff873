"""Prefect flows, one per DVC stage. They turn the pure library in ``nightlab`` into stages;
``dvc.yaml`` wires them into the DAG and ``flows.pipeline`` runs that DAG from Prefect."""
import os
from pathlib import Path

# Set before Prefect is imported: no telemetry (no network here), and persisted task results
# live inside the project so an interrupted stage resumes from them.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(Path.cwd() / ".prefect-cache" / "results"))
os.environ.setdefault("PREFECT_LOGGING_LOG_PRINTS", "true")
os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")
# A loaded 2-core machine can need more than the default 20 s to start the temporary server.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
