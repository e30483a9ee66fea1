#!/bin/bash
# The official image's health command: asks the broker for its API versions (kafka-tools' own class).
exec java -Xmx64m -cp '/opt/kafka/libs/*' -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
  org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
