"""Benchmark suite of feedback-pipeline: ``python -m bench`` (``make bench``).

Every figure is a ratio against a baseline measured in the same run, on the same machine:
absolute times on a shared machine are noise, ratios are not (or much less). Clients run as
subprocesses so that their CPU time and peak memory are measured the same way (``os.wait4``);
the fake Feedback API runs in a process of its own on the loopback interface.

Modules: ``procs`` (child processes and their resource usage), ``server`` (the fake API
process), ``data`` (input files), ``minimal_client`` and ``twilio_sdk`` (the baselines, run as
``python -m``), ``network``, ``limits`` and ``local`` (the scenarios), ``sizes`` (full and
smoke sizes, each a command-line option), ``table`` (the report).
"""

from __future__ import annotations
