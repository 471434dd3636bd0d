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
#   KAFKA_SECURITY_PROTOCOL  without KAFKA_CLIENT_CONFIG: SSL, SASL_PLAINTEXT or SASL_SSL writes the
#                            client properties from these, the variables the services read:
#   KAFKA_SASL_MECHANISM     PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default)
#   KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD  the Kafka user allowed to create and alter topics
#   KAFKA_SSL_CAFILE         CA bundle (PEM) of the brokers' certificates; default: the JVM's CAs
#   KAFKA_SSL_CERTFILE, KAFKA_SSL_KEYFILE     client certificate and PKCS#8 key (PEM), mutual TLS
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

# A value inside a .properties file: backslashes doubled.
properties_escaped() {
    printf '%s' "$1" | sed -e 's/\\/\\\\/g'
}

# A file the client configuration names must be there (as the services check at start).
readable() {
    if [ ! -r "$2" ]; then
        echo "$1=$2: no such readable file" >&2
        exit 1
    fi
}

# A PEM file as one .properties value: each line ends in an escaped newline and continues.
pem_value() {
    tr -d '\r' < "$1" | sed -e 's/\\/\\\\/g' -e 's/$/\\n\\/'
    echo
}

# A JAAS option value in double quotes: backslash and double quote escaped, then escaped again
# for the .properties file. Kafka reads that file as ISO-8859-1, and a line break ends a value:
# anything but printable ASCII is refused rather than sent garbled.
jaas_quoted() {
    case $2 in
        *"$newline"*)
            echo "$1 contains a line break" >&2
            exit 1 ;;
    esac
    if printf '%s' "$2" | LC_ALL=C grep -q '[^ -~]'; then
        echo "$1 contains characters other than printable ASCII" >&2
        exit 1
    fi
    properties_escaped "$(printf '%s' "$2" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}
newline='
'

# The client properties of a secured cluster, from the variables the services read; the password
# goes into the file only (mode 600 in /tmp, removed at exit), never onto a command line.
write_client_config() {
    protocol=$KAFKA_SECURITY_PROTOCOL
    case $protocol in
        SSL | SASL_PLAINTEXT | SASL_SSL) ;;
        *)
            echo "KAFKA_SECURITY_PROTOCOL=$protocol: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL" >&2
            exit 1 ;;
    esac
    echo "security.protocol=$protocol"
    case $protocol in
        SASL_*)
            mechanism=${KAFKA_SASL_MECHANISM:-SCRAM-SHA-512}
            case $mechanism in
                PLAIN) module=org.apache.kafka.common.security.plain.PlainLoginModule ;;
                SCRAM-SHA-256 | SCRAM-SHA-512)
                    module=org.apache.kafka.common.security.scram.ScramLoginModule ;;
                *)
                    echo "KAFKA_SASL_MECHANISM=$mechanism: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512" >&2
                    exit 1 ;;
            esac
            : "${KAFKA_SASL_USERNAME:?KAFKA_SASL_USERNAME must name the Kafka user with $protocol}"
            : "${KAFKA_SASL_PASSWORD:?KAFKA_SASL_PASSWORD must be set with $protocol}"
            user=$(jaas_quoted KAFKA_SASL_USERNAME "$KAFKA_SASL_USERNAME")
            password=$(jaas_quoted KAFKA_SASL_PASSWORD "$KAFKA_SASL_PASSWORD")
            echo "sasl.mechanism=$mechanism"
            printf 'sasl.jaas.config=%s required username="%s" password="%s";\n' \
                "$module" "$user" "$password" ;;
    esac
    case $protocol in
        *SSL)
            if [ -n "${KAFKA_SSL_CAFILE:-}" ]; then
                readable KAFKA_SSL_CAFILE "$KAFKA_SSL_CAFILE"
                echo "ssl.truststore.type=PEM"
                echo "ssl.truststore.location=$(properties_escaped "$KAFKA_SSL_CAFILE")"
            fi
            if [ -n "${KAFKA_SSL_CERTFILE:-}" ] || [ -n "${KAFKA_SSL_KEYFILE:-}" ]; then
                : "${KAFKA_SSL_CERTFILE:?KAFKA_SSL_CERTFILE must be set with KAFKA_SSL_KEYFILE}"
                : "${KAFKA_SSL_KEYFILE:?KAFKA_SSL_KEYFILE must be set with KAFKA_SSL_CERTFILE}"
                readable KAFKA_SSL_CERTFILE "$KAFKA_SSL_CERTFILE"
                readable KAFKA_SSL_KEYFILE "$KAFKA_SSL_KEYFILE"
                # Inline: a PEM key store file would need an encrypted key (Kafka's rule).
                echo "ssl.keystore.type=PEM"
                printf 'ssl.keystore.certificate.chain='
                pem_value "$KAFKA_SSL_CERTFILE"
                printf 'ssl.keystore.key='
                pem_value "$KAFKA_SSL_KEYFILE"
            fi ;;
        *)
            if [ -n "${KAFKA_SSL_CAFILE:-}${KAFKA_SSL_CERTFILE:-}${KAFKA_SSL_KEYFILE:-}" ]; then
                echo "KAFKA_SSL_* files need KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, not $protocol" >&2
                exit 1
            fi ;;
    esac
}

if [ -z "${KAFKA_CLIENT_CONFIG:-}" ] && [ "${KAFKA_SECURITY_PROTOCOL:-PLAINTEXT}" != PLAINTEXT ]; then
    KAFKA_CLIENT_CONFIG=/tmp/kefu-kafka-client.$$.properties
    trap 'rm -f "$KAFKA_CLIENT_CONFIG"' EXIT
    (umask 077 && write_client_config > "$KAFKA_CLIENT_CONFIG")
fi

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
