"""HeadForge's own head template (build.py) and its per-subject fitting (fit.py)."""
