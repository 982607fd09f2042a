#!/bin/sh
# compose.yaml's pgbouncer: deploy/pgbouncer/pgbouncer.ini.template filled in
# from the environment, as devtools/pgbouncer.py fills it for the local
# cluster, and an auth file holding the service's login (PGBOUNCER_USER,
# PGBOUNCER_PASSWORD), which PgBouncer also logs in to PostgreSQL with.
set -eu
template=${PGBOUNCER_TEMPLATE:-/etc/pgbouncer/pgbouncer.ini.template}
dir=${PGBOUNCER_RUN_DIR:-/tmp/pgbouncer}
umask 077
mkdir -p "$dir"
: "${PGBOUNCER_USER:?}" "${PGBOUNCER_PASSWORD:?}"
# auth_file quotes each field in double quotes and doubles a quote inside one.
quoted_password=$(printf '%s' "$PGBOUNCER_PASSWORD" | sed 's/"/""/g')
printf '"%s" "%s"\n' "$PGBOUNCER_USER" "$quoted_password" > "$dir/userlist.txt"
export PGBOUNCER_AUTH_FILE="$dir/userlist.txt"
names=$(grep -o '\${[A-Z_]*}' "$template" | sort -u)
for name in $names; do
    variable=$(echo "$name" | tr -d '${}')
    eval "test -n \"\${$variable:-}\"" || { echo "pgbouncer: $variable is not set" >&2; exit 1; }
done
envsubst "$(echo $names)" < "$template" > "$dir/pgbouncer.ini"
exec pgbouncer "$dir/pgbouncer.ini"
