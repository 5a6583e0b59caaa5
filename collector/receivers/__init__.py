"""The receivers: OTLP/gRPC, OTLP/HTTP, events, the GitHub webhook and the query API over a TraceSink.

Default endpoints: gRPC ``:4317`` (``TraceService/Export``), HTTP ``:4318`` (see
:mod:`collector.receivers.http`).  The receivers never parse OTLP themselves: requests go, as
raw bytes, to a :class:`collector.ports.TraceSink`; errors are answered through the one map
in :mod:`collector.receivers.status`.  They import no pipeline, exporter or app:
:mod:`collector.app.receivers` builds them from the settings.
"""
