"""collector.exporters."""
