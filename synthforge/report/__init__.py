"""Self-contained HTML reports of runs and training runs (``synthforge report``)."""
