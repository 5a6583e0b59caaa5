"""prodloop adapters and runtime."""
