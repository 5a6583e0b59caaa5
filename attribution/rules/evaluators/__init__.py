"""The evaluators of rule kinds, one module per kind: each gives one verdict per key at one instant."""
