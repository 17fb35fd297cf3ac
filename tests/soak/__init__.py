"""Issue 22's soak of a loopback cluster: python -m tests.soak.run (see run.py)."""
