"""prodloop's pure attribution core: no I/O, no clock, no environment."""
