"""``prodloop run``: the long-running service's command line."""

from __future__ import annotations

import sys
from typing import Any

import click

from collector.cli.options import Overrides, SettingsFlags, attribution_options, store_options
from collector.errors import ConfigError
from collector.processing.runtime import catch_stop_signals


@click.command()
@store_options
@attribution_options
@click.option(
    "--bootstrap-servers",
    envvar="PRODLOOP_KAFKA__BOOTSTRAP_SERVERS",
    show_envvar=True,
    default=None,
    help="Kafka brokers (host:port, comma-separated). Without Kafka, the OTLP receivers run in direct mode.",
)
@click.option(
    "--traces-topic",
    envvar="PRODLOOP_KAFKA__TRACES_TOPIC",
    show_envvar=True,
    default=None,
    help="[default: otlp_spans]",
)
@click.option(
    "--traces-encoding",
    type=click.Choice(["otlp_proto", "otlp_json", "auto"]),
    envvar="PRODLOOP_KAFKA__TRACES_ENCODING",
    show_envvar=True,
    default=None,
    help="As the Collector's kafka exporter writes it [default: otlp_proto]; auto detects per record and counts it.",
)
@click.option(
    "--group-id",
    envvar="PRODLOOP_KAFKA__GROUP_ID",
    show_envvar=True,
    default=None,
    help="Consumer group [default: prodloop].",
)
@click.option(
    "--metrics-port",
    type=int,
    envvar="PRODLOOP_SERVICE__METRICS_PORT",
    show_envvar=True,
    default=None,
    help="/metrics, /healthz, /readyz [default: 9464].",
)
@click.option(
    "--receiver-mode",
    type=click.Choice(["auto", "direct", "gateway"]),
    envvar="PRODLOOP_RECEIVER__MODE",
    show_envvar=True,
    default=None,
    help="OTLP receivers: direct (aggregate here), gateway (produce to Kafka) [default: auto, "
    "gateway when Kafka is configured].",
)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    envvar="PRODLOOP_RECEIVER__GRPC_PORT",
    show_envvar=True,
    default=None,
    help="OTLP/gRPC port [default: 4317; 0: any free port].",
)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    envvar="PRODLOOP_RECEIVER__HTTP_PORT",
    show_envvar=True,
    default=None,
    help="OTLP/HTTP and events API port [default: 4318; 0: any free port].",
)
@click.option(
    "--listen",
    default=None,
    metavar="HOST",
    help="Address both receivers listen on (receiver.grpc_host and receiver.http_host) "
    "[default: 127.0.0.1; 0.0.0.0: every interface].",
)
def run(
    flags: SettingsFlags,
    bootstrap_servers: str | None,
    traces_topic: str | None,
    traces_encoding: str | None,
    group_id: str | None,
    metrics_port: int | None,
    receiver_mode: str | None,
    grpc_port: int | None,
    http_port: int | None,
    listen: str | None,
) -> None:
    """Run the service: consume Kafka (or receive OTLP), attribute, aggregate, write.

    All settings can come from --config prodloop.yaml and PRODLOOP_* variables (nested
    keys joined by __, e.g. PRODLOOP_STREAM__BATCH_RECORDS); `prodloop config` prints every
    key with its effective value.
    """
    stop = catch_stop_signals()  # first: a SIGTERM while starting up still exits cleanly
    from collector.app import service  # noqa: PLC0415  lazy: 0.5 s, after the signals

    kafka: dict[str, Any] = {}
    if bootstrap_servers:
        kafka["bootstrap_servers"] = bootstrap_servers
    if traces_topic:
        kafka["traces_topic"] = traces_topic
    if traces_encoding:
        kafka["traces_encoding"] = traces_encoding
    if group_id:
        kafka["group_id"] = group_id
    extra: Overrides = {"kafka": kafka}
    if metrics_port is not None:
        extra["service"] = {"metrics_port": metrics_port}
    receiver: dict[str, Any] = {}
    if receiver_mode:
        receiver["mode"] = receiver_mode
    if grpc_port is not None:
        receiver["grpc_port"] = grpc_port
    if http_port is not None:
        receiver["http_port"] = http_port
    if listen:
        receiver["grpc_host"] = receiver["http_host"] = listen
    if receiver:
        extra["receiver"] = receiver
    try:
        settings = flags.settings(extra)
    except ConfigError as exc:  # a log line like the others, not the command group's plain text
        sys.exit(service.fail_before_settings(exc))
    sys.exit(service.run(settings, stop))
