"""NightLab's library: pure, testable pieces (data, models, metrics, boxes, hdm, merge, viz).

It knows nothing of DVC or Prefect: ``flows/`` turns these pieces into pipeline stages, and
``nightlab_cli`` is the command line above both.
"""
