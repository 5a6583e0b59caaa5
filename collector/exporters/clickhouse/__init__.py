"""ClickHouse: the client, migrations, aggregates and read model, stream and alert state."""
