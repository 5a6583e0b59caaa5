"""Kafka: the trace and event consumers, the producer, the gateway, kafka-python compatibility."""
