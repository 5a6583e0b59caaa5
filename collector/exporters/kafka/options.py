"""The Kafka connection and security options, and the kafka-python client configuration made of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KafkaOptions:
    """Connection and security options, passed through to kafka-python, and the traces
    consumer's group membership (``group_instance_id``, ``session_timeout_ms``).  Built from
    ``Settings.kafka`` by the composition root, :mod:`collector.app.build`."""

    bootstrap_servers: tuple[str, ...]
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    client_id: str = "prodloop"
    group_instance_id: str = ""  # empty: a dynamic member
    leave_group_on_stop: bool = True
    session_timeout_ms: int = 10_000

    def client_config(self) -> dict[str, Any]:
        """The keyword arguments every kafka-python client of prodloop takes."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
            "reconnect_backoff_max_ms": 2000,
        }
        if self.sasl_mechanism:
            cfg["sasl_mechanism"] = self.sasl_mechanism
            cfg["sasl_plain_username"] = self.sasl_username
            cfg["sasl_plain_password"] = self.sasl_password
        if self.security_protocol in ("SSL", "SASL_SSL"):
            cfg["ssl_check_hostname"] = self.ssl_check_hostname
            if self.ssl_cafile:
                cfg["ssl_cafile"] = self.ssl_cafile
            if self.ssl_certfile:
                cfg["ssl_certfile"] = self.ssl_certfile
            if self.ssl_keyfile:
                cfg["ssl_keyfile"] = self.ssl_keyfile
        return cfg
