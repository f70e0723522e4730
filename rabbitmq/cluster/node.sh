#!/bin/bash
# The entrypoint of the cluster profile's RabbitMQ nodes (docker-compose.yml: rabbitmq1..3), run as
# root. It writes the Erlang cookie the nodes authenticate to each other with (from
# RABBITMQ_CLUSTER_COOKIE) and puts cluster.conf (peer discovery by the static node list) into
# conf.d, then hands over to rabbitmq/definitions.sh: the same users, vhost and permissions as the
# single node's, and then the image's own entrypoint.
#
# The cookie goes into a file, the way RabbitMQ 3.x and 4.x both read it (the image's
# RABBITMQ_ERLANG_COOKIE variable is deprecated), readable by the broker's user only, as Erlang
# requires. rabbitmqctl in `docker compose exec` (and the healthcheck) finds it there too: both
# images set HOME to this directory.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
DATA_DIR=/var/lib/rabbitmq
CONF_D=/etc/rabbitmq/conf.d

die() {
    echo "rabbitmq cluster node: $*" >&2
    exit 1
}

cookie=${RABBITMQ_CLUSTER_COOKIE:-}
[[ $cookie =~ ^[A-Za-z0-9_-]{20,255}$ ]] ||
    die "RABBITMQ_CLUSTER_COOKIE must be 20 to 255 letters, digits, - or _"
# RABBITMQ_NODENAME (set per node in docker-compose.yml) must be one the others look for.
nodename=${RABBITMQ_NODENAME:-rabbit@$(hostname)}
grep -qE "^cluster_formation\.classic_config\.nodes\.[0-9]+ = ${nodename}$" "$HERE/cluster.conf" ||
    die "$nodename is not in cluster.conf"

mkdir -p "$DATA_DIR" "$CONF_D"
(umask 077 && printf '%s' "$cookie" >"$DATA_DIR/.erlang.cookie")
chown rabbitmq:rabbitmq "$DATA_DIR/.erlang.cookie"
cp "$HERE/cluster.conf" "$CONF_D/30-task-service-cluster.conf"
echo "rabbitmq cluster node: $nodename, peers from cluster.conf"

unset RABBITMQ_CLUSTER_COOKIE cookie
exec bash "$HERE/../definitions.sh" "$@"
