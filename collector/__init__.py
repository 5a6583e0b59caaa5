"""prodloop's adapters: everything that touches the world, in the OpenTelemetry Collector's component model."""
