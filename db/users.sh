#!/bin/bash
# MySQL init script (mounted into /docker-entrypoint-initdb.d by docker-compose.yml): runs once, on
# the first start with an empty data volume, after the entrypoint has created MYSQL_DATABASE and
# MYSQL_USER (with ALL on MYSQL_DATABASE) and after db/init.sql. It leaves each user what it needs:
#   MYSQL_USER          the services: SELECT, INSERT, UPDATE, DELETE on MYSQL_DATABASE, nothing
#                       else (no DDL, no other database, no global privilege)
#   MYSQL_MIGRATE_USER  the `migrate` service (Alembic): the same, and the DDL the migrations run
#                       (CREATE, ALTER, DROP, INDEX, REFERENCES), on MYSQL_DATABASE only
# A shell script, not .sql, because the names and passwords come from the environment. It may be
# run again on a live server, for a volume made before it or to set a changed password:
#   docker compose exec mysql_db bash /docker-entrypoint-initdb.d/20-users.sh
#
# The official entrypoint executes this file if it is executable and sources it otherwise, so it
# sets no shell options, never calls `exit` and keeps its variables local. The root password
# travels in an option file, as the entrypoint itself does it, to keep it off the command line.

# A value inside '...' in SQL.
sql_string() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"; }

narrow_app_users() {
    local app migrator migrator_password database
    if [ -z "${MYSQL_USER:-}" ] || [ -z "${MYSQL_DATABASE:-}" ] || [ -z "${MYSQL_MIGRATE_USER:-}" ] \
        || [ -z "${MYSQL_MIGRATE_PASSWORD:-}" ]; then
        echo "users: MYSQL_USER, MYSQL_DATABASE, MYSQL_MIGRATE_USER and MYSQL_MIGRATE_PASSWORD" \
            "must all be set" >&2
        return 1
    fi
    if [ "$MYSQL_MIGRATE_USER" = "$MYSQL_USER" ]; then
        echo "users: MYSQL_MIGRATE_USER must differ from MYSQL_USER" >&2
        return 1
    fi
    echo "users: ${MYSQL_USER} may only read and write rows in ${MYSQL_DATABASE};" \
        "${MYSQL_MIGRATE_USER} may also change its tables"
    app=$(sql_string "$MYSQL_USER")
    migrator=$(sql_string "$MYSQL_MIGRATE_USER")
    migrator_password=$(sql_string "$MYSQL_MIGRATE_PASSWORD")
    # Inside `...`, with _ escaped: in a grant's database name it is a wildcard.
    database=$(printf '%s' "$MYSQL_DATABASE" | sed -e 's/`/``/g' -e 's/_/\\_/g')
    # --defaults-extra-file must come first: the client reads option files before anything else.
    mysql --defaults-extra-file=<(printf '[client]\npassword="%s"\n' "${MYSQL_ROOT_PASSWORD}") \
        --protocol=socket -uroot <<SQL
REVOKE ALL PRIVILEGES, GRANT OPTION FROM '${app}'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE ON \`${database}\`.* TO '${app}'@'%';
CREATE USER IF NOT EXISTS '${migrator}'@'%' IDENTIFIED BY '${migrator_password}';
ALTER USER '${migrator}'@'%' IDENTIFIED BY '${migrator_password}';
REVOKE ALL PRIVILEGES, GRANT OPTION FROM '${migrator}'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX, REFERENCES ON \`${database}\`.* TO '${migrator}'@'%';
SQL
}

narrow_app_users
