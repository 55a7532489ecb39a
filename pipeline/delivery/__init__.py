"""Delivery of one record: the API client, retry verdicts, the circuit breaker."""
