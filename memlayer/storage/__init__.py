"""Storage: the connection pool, transactions, named SQL queries, migrations and the embedded PostgreSQL."""
