"""Prefect flows, one per DVC stage. They turn the pure library in ``nightlab`` into stages;
``dvc.yaml`` wires them into the DAG and ``flows.pipeline`` runs that DAG from Prefect.

Prefect's settings for this project (no telemetry, task results persisted under
``.prefect-cache/``) live in pyproject.toml's ``[tool.prefect]`` table, which Prefect reads from
the working directory: importing this package changes nothing.
"""
