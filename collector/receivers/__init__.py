"""collector.receivers."""
