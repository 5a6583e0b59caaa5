"""collector.exporters.clickhouse."""
