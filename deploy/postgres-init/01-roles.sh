#!/bin/bash
# Runs once when the PostgreSQL volume is first created: the SELECT-only role used for questions, and the
# application's own database for the query log.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE qw_reader LOGIN PASSWORD '${READER_PASSWORD}' NOSUPERUSER NOCREATEDB NOCREATEROLE;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO qw_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO qw_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE ${POSTGRES_USER} IN SCHEMA public GRANT SELECT ON TABLES TO qw_reader;
ALTER ROLE qw_reader SET default_transaction_read_only = on;
ALTER ROLE qw_reader SET statement_timeout = '10s';
CREATE DATABASE querywise_log OWNER ${POSTGRES_USER};
SQL
