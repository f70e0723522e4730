#!/bin/bash
# The cluster profile's node healthcheck (docker-compose.yml): healthy once this node accepts AMQP
# connections and is a member of one cluster with every node cluster.conf lists. The API and
# worker replicas start only when all three are healthy, so the quorum queues they declare get a
# replica on each node. A member that is down still counts as a member: stopping one node leaves
# the other two healthy.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)

# Not `ping`: that passes before the AMQP listener accepts connections.
rabbitmq-diagnostics -q check_port_connectivity
# disk_nodes lists every member, running or not (running_nodes only those up).
status=$(rabbitmqctl -q cluster_status --formatter json)
members=$(grep -o '"disk_nodes":\[[^]]*\]' <<<"$status") || members=""
nodes=$(sed -n 's/^cluster_formation\.classic_config\.nodes\.[0-9]* = //p' "$HERE/cluster.conf")
[ -n "$nodes" ] || { echo "no nodes in $HERE/cluster.conf" >&2; exit 1; }
while read -r node; do
    if [[ $members != *"\"$node\""* ]]; then
        echo "not (yet) clustered with $node" >&2
        exit 1
    fi
done <<<"$nodes"
