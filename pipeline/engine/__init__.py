"""The run: open, deliver, close; run control, reading, skip, stages, acks, housekeeping,
reconciliation."""
