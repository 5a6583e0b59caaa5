"""The payment API client: parses gateway replies (fails inside json)."""

from __future__ import annotations

import json


class GatewayError(Exception):
    """The gateway's reply could not be used."""


def parse_reply(body: str) -> dict[str, object]:
    return json.loads(body)  # raises json.JSONDecodeError deep inside the json package


def charge(body: str) -> dict[str, object]:
    try:
        return parse_reply(body)
    except ValueError as exc:
        raise GatewayError("unreadable gateway reply") from exc


def refund(body: str) -> dict[str, object]:
    try:
        return parse_reply(body)
    except ValueError:
        # a bug in the handler: the original error becomes the context of a KeyError
        return {"refunded": {}["amount"]}
