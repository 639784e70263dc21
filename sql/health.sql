-- name: ping()$
-- Proves a round trip to the database.
SELECT 1;
