"""File sources: CSV and JSONL, plain or gzip, and standard input."""
