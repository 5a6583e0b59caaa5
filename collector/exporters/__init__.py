"""The exporters: the implementations of the ports (ClickHouse, Kafka, ticket sinks)."""
