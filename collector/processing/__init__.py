"""collector.processing."""
