"""Observing a run: observer, summary, monitor, live display, metrics, the HTML report."""
