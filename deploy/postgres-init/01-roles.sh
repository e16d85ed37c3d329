#!/bin/bash
# Runs once when the PostgreSQL volume is first created. Three roles, each with only what it needs:
# - querywise_owner (POSTGRES_USER): owns the data; `seed` loads the demo through it. Never used by the app.
# - qw_reader: asks the questions; SELECT on the data, read-only sessions, nothing else.
# - qw_log: the query log (and the app's other tables: glossary, logged-out sessions); owns its own database
#   querywise_log and cannot connect to the data's database at all.
set -euo pipefail
: "${READER_PASSWORD:?set READER_PASSWORD}" "${QUERYLOG_PASSWORD:?set QUERYLOG_PASSWORD}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE qw_reader LOGIN PASSWORD '${READER_PASSWORD}' NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE ROLE qw_log LOGIN PASSWORD '${QUERYLOG_PASSWORD}' NOSUPERUSER NOCREATEDB NOCREATEROLE;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO qw_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO qw_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE ${POSTGRES_USER} IN SCHEMA public GRANT SELECT ON TABLES TO qw_reader;
ALTER ROLE qw_reader SET default_transaction_read_only = on;
ALTER ROLE qw_reader SET statement_timeout = '10s';
-- Only the roles named here may connect to the data: not qw_log, not any role created later.
REVOKE CONNECT, TEMPORARY ON DATABASE ${POSTGRES_DB} FROM PUBLIC;
GRANT CONNECT ON DATABASE ${POSTGRES_DB} TO qw_reader;
-- The query log's own database, owned by its role; nobody else may connect to it.
CREATE DATABASE querywise_log OWNER qw_log;
REVOKE CONNECT, TEMPORARY ON DATABASE querywise_log FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE querywise_log TO qw_log;
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname querywise_log <<SQL
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO qw_log;
SQL
