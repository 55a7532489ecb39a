"""The PostgreSQL ledger: shared by many workers, with leases and fenced writes."""
