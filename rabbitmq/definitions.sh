#!/bin/bash
# The RabbitMQ container's entrypoint (docker-compose.yml), run as root before the image's own.
# It fills in rabbitmq/definitions.json (the users, the vhost and their permissions) from the
# environment, points RabbitMQ's load_definitions at the result (a conf.d file: RabbitMQ 3.10
# and 4.x read /etc/rabbitmq/conf.d/*.conf beside rabbitmq.conf), and hands over to the image's
# entrypoint, which starts the server as the `rabbitmq` user.
#
# Not RABBITMQ_DEFAULT_USER: the image makes that user an administrator, on the first start only.
# With definitions to import, RabbitMQ creates no default user or vhost (not even `guest`); it
# imports them at every start, so a password changed in .env holds from the next restart. Users
# come out as the template says: APP_USER (the services) with no tags, ADMIN_USER with the
# administrator tag. A user dropped from the template stays in the broker until deleted there.
# The passwords go in as plain `password` values, which RabbitMQ hashes on import (3.x and 4.x).
set -euo pipefail

TEMPLATE=${DEFINITIONS_TEMPLATE:-/usr/local/lib/task-service/definitions.json}
DEFINITIONS=/etc/rabbitmq/definitions.json

die() {
    echo "rabbitmq definitions: $*" >&2
    exit 1
}

# The inside of a JSON string. A control character cannot come from .env, and needs more than this.
json_escaped() {
    [[ $1 != *[[:cntrl:]]* ]] || die "control characters are not supported in names or passwords"
    local escaped=${1//'\'/'\\'}
    printf '%s' "${escaped//'"'/'\"'}"
}

for name in APP_USER APP_PASSWORD APP_VHOST ADMIN_USER ADMIN_PASSWORD; do
    [ -n "${!name:-}" ] || die "$name is empty"
done
[ "$APP_USER" != "$ADMIN_USER" ] || die "APP_USER and ADMIN_USER must differ"

# Quoted replacements, so that an `&` or a backslash in a value stays what it is (bash 5.2).
definitions=$(<"$TEMPLATE")
for name in APP_USER APP_VHOST ADMIN_USER APP_PASSWORD ADMIN_PASSWORD; do
    value=$(json_escaped "${!name}")
    definitions=${definitions//"@${name}@"/"$value"}
done
# Readable by the broker only: it holds the passwords.
(umask 077 && printf '%s\n' "$definitions" >"$DEFINITIONS")
chown rabbitmq:rabbitmq "$DEFINITIONS"
mkdir -p /etc/rabbitmq/conf.d
echo "load_definitions = $DEFINITIONS" >/etc/rabbitmq/conf.d/20-task-service-definitions.conf
echo "rabbitmq definitions: ${APP_USER} (no tags) and ${ADMIN_USER} (administrator) on vhost ${APP_VHOST}"

unset APP_PASSWORD ADMIN_PASSWORD
exec docker-entrypoint.sh "$@"
