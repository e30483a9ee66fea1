#!/bin/bash
# As in the official image: the broker with KAFKA_HEAP_OPTS, on the given server.properties.
exec java ${KAFKA_HEAP_OPTS:--Xmx1g} -cp '/opt/kafka/libs/*' \
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties kafka.Kafka "$@"
