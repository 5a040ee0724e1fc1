#!/bin/sh
# Temporal's two PostgreSQL databases, created when missing and brought to the schema of the server's version. Every
# step is idempotent, so this runs at each `docker compose up` (the temporal-schema one-shot, temporalio/admin-tools)
# and after an upgrade of the images. Connection from SQL_PLUGIN, SQL_HOST, SQL_PORT, SQL_USER, SQL_PASSWORD.
set -eu
schema=${TEMPORAL_SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}
sql_tool=${TEMPORAL_SQL_TOOL:-temporal-sql-tool}

for db in temporal temporal_visibility; do
  if [ "$db" = temporal ]; then kind=temporal; else kind=visibility; fi
  # Fails when the database exists already; a real failure (a wrong password) fails the steps below too.
  "$sql_tool" --db "$db" create-database --defaultdb postgres >/dev/null 2>&1 || true
  "$sql_tool" --db "$db" setup-schema -v 0.0
  "$sql_tool" --db "$db" update-schema -d "$schema/$kind/versioned"
  echo "setup-schema: $db at the schema of $schema/$kind"
done
