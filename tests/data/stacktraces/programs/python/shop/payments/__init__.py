"""Payments: a toy module that fails in known places."""
