"""The bundled demo shop."""
