"""collector.exporters.kafka."""
