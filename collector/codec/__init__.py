"""collector.codec."""
