"""Web: HTTP glue shared by every blueprint (errors, headers, logs, pagination, schemas, idempotency, rate limits)."""
