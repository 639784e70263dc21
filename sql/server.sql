-- name: database_exists(name)$
-- Whether the server has a database of this name (the embedded server's first start creates it).
SELECT EXISTS (SELECT FROM pg_database WHERE datname = :name);
