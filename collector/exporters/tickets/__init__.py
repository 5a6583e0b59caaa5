"""collector.exporters.tickets."""
