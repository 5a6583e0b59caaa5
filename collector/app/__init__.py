"""The application: settings, attribution files, the composition root (build.py), the service and its ops endpoints."""
