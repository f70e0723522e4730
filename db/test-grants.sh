#!/bin/bash
# MySQL init script (mounted into /docker-entrypoint-initdb.d by docker-compose.yml): runs once, on
# the first start with an empty data volume, after db/users.sh. For the tests only.
#
# Why: the API's test suite (`docker compose exec api_service pytest`) creates and drops scratch
# databases named tasks_test_<hex> and runs the services under test on them. It does that as
# MYSQL_TEST_USER (testkit/scratch.py), which gets all privileges on databases matching
# `tasks\_test\_%` and nothing else: not MYSQL_DATABASE, no global privilege. The services' user
# (MYSQL_USER) gets nothing here. A stack that never runs those tests can leave this script out.
# MySQL 8.2+ deprecates wildcards in database-level grants (a warning; they still apply while
# partial_revokes is OFF, the default); MariaDB takes them as they are. Like db/users.sh, it may
# be run again on a live server:
#   docker compose exec mysql_db bash /docker-entrypoint-initdb.d/30-test-grants.sh
#
# The official entrypoint executes this file if it is executable and sources it otherwise, so it
# sets no shell options, never calls `exit` and keeps its variables local. The root password
# travels in an option file, as the entrypoint itself does it, to keep it off the command line.

# A value inside '...' in SQL.
sql_string() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"; }

grant_test_user() {
    local tester tester_password
    if [ -z "${MYSQL_TEST_USER:-}" ] || [ -z "${MYSQL_TEST_PASSWORD:-}" ]; then
        echo "test-grants: MYSQL_TEST_USER or MYSQL_TEST_PASSWORD is not set, no test user"
        return 0
    fi
    if [ "$MYSQL_TEST_USER" = "${MYSQL_USER:-}" ] || [ "$MYSQL_TEST_USER" = "${MYSQL_MIGRATE_USER:-}" ]; then
        echo "test-grants: MYSQL_TEST_USER must differ from MYSQL_USER and MYSQL_MIGRATE_USER" >&2
        return 1
    fi
    echo "test-grants: ${MYSQL_TEST_USER} may create and drop databases named tasks_test_*"
    tester=$(sql_string "$MYSQL_TEST_USER")
    tester_password=$(sql_string "$MYSQL_TEST_PASSWORD")
    # --defaults-extra-file must come first: the client reads option files before anything else.
    mysql --defaults-extra-file=<(printf '[client]\npassword="%s"\n' "${MYSQL_ROOT_PASSWORD}") \
        --protocol=socket -uroot <<SQL
CREATE USER IF NOT EXISTS '${tester}'@'%' IDENTIFIED BY '${tester_password}';
ALTER USER '${tester}'@'%' IDENTIFIED BY '${tester_password}';
REVOKE ALL PRIVILEGES, GRANT OPTION FROM '${tester}'@'%';
GRANT ALL PRIVILEGES ON \`tasks\\_test\\_%\`.* TO '${tester}'@'%';
SQL
}

grant_test_user
