"""collector.app."""
