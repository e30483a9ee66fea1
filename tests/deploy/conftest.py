"""Fixtures of the deployment tests (the tools behind them live in deploy_support.py)."""

from deploy_support import compose, compose_model, helm, render, rendered  # noqa: F401
