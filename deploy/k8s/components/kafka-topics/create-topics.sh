#!/bin/sh
# Create kefu's topics with their partition counts (topics.txt); safe to run again: existing
# topics are kept, and a topic with fewer partitions than listed is raised to the listed count.
#
# Environment:
#   KAFKA_BOOTSTRAP_SERVERS  host:port[,host:port] of the cluster (required)
#   TOPICS_FILE              default: topics.txt beside this script
#   REPLICATION_FACTOR       default 1 (use 3 on a production cluster)
#   MIN_INSYNC_REPLICAS      optional min.insync.replicas for every topic (2 with factor 3)
#   TOPIC_PREFIX             prepended to every name, as KEFU_<SVC>_TOPIC_PREFIX in the services
#   KAFKA_CLIENT_CONFIG      optional client properties file (SASL/TLS), passed as --command-config
#   KAFKA_BIN                directory of kafka-topics.sh, default /opt/kafka/bin (Apache image)
#   WAIT_SECONDS             how long to wait for the cluster to answer, default 120
set -eu

: "${KAFKA_BOOTSTRAP_SERVERS:?KAFKA_BOOTSTRAP_SERVERS must name the Kafka cluster}"
here=$(cd "$(dirname "$0")" && pwd)
TOPICS_FILE=${TOPICS_FILE:-$here/topics.txt}
REPLICATION_FACTOR=${REPLICATION_FACTOR:-1}
MIN_INSYNC_REPLICAS=${MIN_INSYNC_REPLICAS:-}
TOPIC_PREFIX=${TOPIC_PREFIX:-}
KAFKA_BIN=${KAFKA_BIN:-/opt/kafka/bin}
WAIT_SECONDS=${WAIT_SECONDS:-120}

topics() {
    if [ -n "${KAFKA_CLIENT_CONFIG:-}" ]; then
        "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" \
            --command-config "$KAFKA_CLIENT_CONFIG" "$@"
    else
        "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" "$@"
    fi
}

waited=0
until topics --list >/dev/null 2>&1; do
    if [ "$waited" -ge "$WAIT_SECONDS" ]; then
        echo "kafka at $KAFKA_BOOTSTRAP_SERVERS did not answer within ${WAIT_SECONDS}s" >&2
        exit 1
    fi
    sleep 2
    waited=$((waited + 2))
done

created=0
altered=0
# Strip comments and blank lines first, so the loop reads only "name partitions [configs]".
sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$TOPICS_FILE" > /tmp/kefu-topics.$$
while read -r name partitions configs; do
    topic="$TOPIC_PREFIX$name"
    set -- --topic "$topic" --partitions "$partitions" --replication-factor "$REPLICATION_FACTOR"
    if [ -n "$MIN_INSYNC_REPLICAS" ]; then
        set -- "$@" --config "min.insync.replicas=$MIN_INSYNC_REPLICAS"
    fi
    old_ifs=$IFS
    IFS=,
    for config in ${configs:-}; do
        set -- "$@" --config "$config"
    done
    IFS=$old_ifs
    current=$(topics --describe --topic "$topic" 2>/dev/null \
        | sed -n 's/.*PartitionCount:[[:space:]]*\([0-9][0-9]*\).*/\1/p' | head -n 1)
    if [ -z "$current" ]; then
        topics --create --if-not-exists "$@"
        echo "created $topic ($partitions partitions)"
        created=$((created + 1))
    elif [ "$current" -lt "$partitions" ]; then
        topics --alter --topic "$topic" --partitions "$partitions"
        echo "raised $topic from $current to $partitions partitions"
        altered=$((altered + 1))
    else
        echo "kept $topic ($current partitions)"
    fi
done < /tmp/kefu-topics.$$
rm -f /tmp/kefu-topics.$$
echo "kefu topics ready: $created created, $altered raised"
