"""The SQLite ledger: one run per file, all work on one thread."""
