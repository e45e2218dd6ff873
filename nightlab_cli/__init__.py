"""The ``nightlab`` command line: the application layer above ``flows`` (Prefect, DVC) and the
``nightlab`` library. Nothing below imports it."""
