#!/bin/bash
# MySQL init script (mounted into /docker-entrypoint-initdb.d by docker-compose.yml): runs once, on
# the first start with an empty data volume, after the entrypoint has created MYSQL_USER and
# MYSQL_DATABASE.
#
# Why: the API's test suite (`docker compose exec api_service pytest`) creates and drops scratch
# databases named tasks_test_<hex> as the app's own user, so that user gets all privileges on
# databases matching `tasks\_test\_%` (and still nothing else beyond MYSQL_DATABASE).
# A shell script, not .sql, because the user name comes from the environment.
# MySQL 8.2+ deprecates wildcards in database-level grants (a warning; they still apply while
# partial_revokes is OFF, the default); MariaDB takes them as they are.
#
# The official entrypoint executes this file if it is executable and sources it otherwise, so it
# sets no shell options and never calls `exit`. The root password travels in an option file, as
# the entrypoint itself does it, to keep it off the command line.

if [ -n "${MYSQL_USER:-}" ]; then
    echo "test-grants: ${MYSQL_USER} may create and drop databases named tasks_test_*"
    # --defaults-extra-file must come first: the client reads option files before anything else.
    mysql --defaults-extra-file=<(printf '[client]\npassword="%s"\n' "${MYSQL_ROOT_PASSWORD}") \
        --protocol=socket -uroot <<SQL
GRANT ALL PRIVILEGES ON \`tasks\\_test\\_%\`.* TO '${MYSQL_USER}'@'%';
SQL
else
    echo "test-grants: MYSQL_USER is not set, nothing to grant"
fi
