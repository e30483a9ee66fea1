#!/bin/bash
# Kafka's entrypoint under docker-compose.sasl.yaml. SCRAM users live in the cluster metadata, so the first
# one (the admin, a super user) can only be made when the storage is formatted; `init` then logs in as the
# admin and makes every service's user and ACLs (flts.kafka_users). This formats the storage with the admin
# (a no-op once formatted), writes the admin's client config for the health check, and hands over to the
# image's own start-up, which reads the same environment and finds the storage formatted.
set -euo pipefail
: "${FLTS_KAFKA_ADMIN_PASSWORD:?FLTS_KAFKA_ADMIN_PASSWORD is required}"
props=/tmp/format.properties
: > "$props"
# The image's rule: every KAFKA_<KEY> (but the JVM options) is a property: lower case, ___ -> -, __ -> _, _ -> .
for name in $(compgen -e); do
  case "$name" in
    KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_LOG4J_OPTS | KAFKA_JMX_OPTS | KAFKA_GC_LOG_OPTS) ;;
    KAFKA_*)
      key=${name#KAFKA_}
      key=${key,,}
      key=${key//___/-}
      key=${key//__/@}
      key=${key//_/.}
      printf '%s=%s\n' "${key//@/_}" "${!name}" >> "$props"
      ;;
  esac
done
/opt/kafka/bin/kafka-storage.sh format --ignore-formatted -t "${CLUSTER_ID:?CLUSTER_ID is required}" -c "$props" \
  --add-scram "SCRAM-SHA-512=[name=flts-admin,password=$FLTS_KAFKA_ADMIN_PASSWORD]"
rm -f "$props"
umask 077
cat > /tmp/admin-client.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="flts-admin" password="$FLTS_KAFKA_ADMIN_PASSWORD";
PROPERTIES
exec /etc/kafka/docker/run
