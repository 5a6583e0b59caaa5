"""The OpenAPI 3.1 description of the HTTP receiver (``GET /openapi.json``).

The deploy and incident bodies are the event JSON Schemas of ``schemas/events`` (shipped as
``collector/_schemas/events``); the error answers are those of the one status map
(:mod:`collector.receivers.status`): a ``google.rpc.Status`` on the OTLP endpoints, ``{"error"}``
on the others.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from collector.ports import SPLITS

_EVENTS_DIR = Path(__file__).resolve().parents[1] / "_schemas" / "events"

_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"

_REASONS = {
    400: "Bad request: undecodable body, invalid values or parameters, a malformed request head",
    401: "Missing or wrong bearer token (the GitHub webhook: a missing or bad signature)",
    404: "No such endpoint, or the endpoint is off",
    405: "The endpoint takes another method",
    408: "The body did not arrive in time (receiver.http_body_timeout_seconds)",
    413: "The body, as sent or decompressed, exceeds receiver.max_request_bytes",
    415: "Unsupported Content-Type or Content-Encoding",
    431: "The request line and headers exceed receiver.http_max_header_bytes",
    429: "Overloaded: retry after Retry-After seconds",
    503: "Unavailable (shutting down, the store or broker failing, or receiver.http_max_connections reached)",
}
_RETRYABLE = (429, 503)


def _event_schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((_EVENTS_DIR / f"{name}.schema.json").read_text())
    doc.pop("$schema", None)  # OpenAPI 3.1's dialect is this draft (2020-12)
    doc.pop("$id", None)  # resolved within this document, not at its public address
    return doc


def _error(status: int, otlp: bool) -> dict[str, Any]:
    content: dict[str, Any] = (
        {
            _PROTOBUF: {"schema": {"type": "string", "contentMediaType": _PROTOBUF}},
            _JSON: {"schema": {"$ref": "#/components/schemas/Status"}},
        }
        if otlp
        else {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}
    )
    if status in (400, 503):  # uvicorn's own, plain: a malformed head; receiver.http_max_connections
        content["text/plain"] = {"schema": {"type": "string"}}
    answer: dict[str, Any] = {"description": _REASONS[status], "content": content}
    if status in _RETRYABLE:
        answer["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    elif status == 401:
        answer["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    elif status == 405:
        answer["headers"] = {"Allow": {"schema": {"type": "string"}}}
    return answer


def _errors(*statuses: int, otlp: bool = False) -> dict[str, Any]:
    return {str(s): _error(s, otlp) for s in sorted({*statuses, 400, 431, 503})}  # any request may get these


_BODY_ERRORS = (400, 401, 404, 405, 408, 413, 415, 429, 503)


def _otlp(kind: str, request: str, response: str, partial: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": f"OTLP/HTTP {kind} export",
            "operationId": f"export_{kind}",
            "tags": ["otlp"],
            "parameters": [{"$ref": "#/components/parameters/ContentEncoding"}],
            "requestBody": {
                "required": True,
                "content": {
                    _PROTOBUF: {"schema": {"type": "string", "contentMediaType": _PROTOBUF}},
                    _JSON: {"schema": {"$ref": f"#/components/schemas/{request}"}},
                },
            },
            "responses": {
                "200": {
                    "description": f"Accepted; invalid {partial} are counted in partialSuccess",
                    "content": {
                        _PROTOBUF: {"schema": {"type": "string", "contentMediaType": _PROTOBUF}},
                        _JSON: {"schema": {"$ref": f"#/components/schemas/{response}"}},
                    },
                },
                **_errors(*_BODY_ERRORS, otlp=True),
            },
        }
    }


def _events(kind: str, schema: str) -> dict[str, Any]:
    one = {"$ref": f"#/components/schemas/{schema}"}
    return {
        "post": {
            "summary": f"Add {kind} events: one object, an array, or one object per line",
            "operationId": f"add_{kind}s",
            "tags": ["events"],
            "parameters": [{"$ref": "#/components/parameters/ContentEncoding"}],
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {"schema": {"oneOf": [one, {"type": "array", "items": one}]}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            },
            "responses": {
                "200": {
                    "description": "Stored (all or, on a 400, none)",
                    "content": {_JSON: {"schema": {"$ref": "#/components/schemas/EventsAccepted"}}},
                },
                **_errors(*_BODY_ERRORS),
            },
        }
    }


def _modules() -> dict[str, Any]:
    def param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}

    text = {"type": "string"}
    return {
        "get": {
            "summary": "Per-module aggregates, as `prodloop query modules --format json`",
            "operationId": "query_modules",
            "tags": ["query"],
            "parameters": [
                param("from", "start of the range: RFC 3339, unix seconds, or relative (-1h)", text),
                param("to", "end of the range (exclusive), as from", text),
                param("service", "only this service", text),
                param("environment", "only this environment", text),
                param("attributed_only", "leave out unattributed spans", {"type": "boolean"}),
                param("limit", "at most this many rows (0: all)", {"type": "integer", "minimum": 0}),
                param(
                    "by",
                    f"split rows by these, comma-separated, of: {', '.join(SPLITS)} (none: one row per module)",
                    text,
                ),
                param("min_spans", "leave out rows of fewer spans", {"type": "integer", "minimum": 0}),
            ],
            "responses": {
                "200": {
                    "description": "Rows, per service, environment, module (and the by splits)",
                    "content": {
                        _JSON: {
                            "schema": {"type": "array", "items": {"$ref": "#/components/schemas/ModuleRow"}}
                        }
                    },
                },
                **_errors(400, 401, 405, 429, 503),
            },
        }
    }


def _github() -> dict[str, Any]:
    answer = {_JSON: {"schema": {"type": "object"}}}
    return {
        "post": {
            "summary": "GitHub deployment_status webhook (signed with X-Hub-Signature-256; no bearer token)",
            "operationId": "github_webhook",
            "tags": ["events"],
            "security": [],
            "parameters": [
                {"name": "X-GitHub-Event", "in": "header", "schema": {"type": "string"}},
                {"name": "X-GitHub-Delivery", "in": "header", "schema": {"type": "string"}},
                {"name": "X-Hub-Signature-256", "in": "header", "schema": {"type": "string"}},
            ],
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {"schema": {"type": "object"}},
                    "application/x-www-form-urlencoded": {
                        "schema": {"type": "object", "properties": {"payload": {"type": "string"}}}
                    },
                },
            },
            "responses": {
                "200": {"description": "Applied (or a ping, or a known redelivery)", "content": answer},
                "202": {"description": "Ignored: another event or deployment state", "content": answer},
                **_errors(400, 401, 404, 405, 408, 413, 429, 503),
            },
        }
    }


def _row_schema() -> dict[str, Any]:
    num, integer, text = {"type": "number"}, {"type": "integer"}, {"type": "string"}

    def nullable(t: str) -> dict[str, Any]:
        return {"type": [t, "null"]}

    props: dict[str, Any] = {
        "service": text,
        "environment": text,
        "module": text,
        "owners": {"type": "array", "items": text},
        "commit_sha": text,
        "deploy_id": text,
        "spans": integer,
        "spans_adjusted": num,
        "errors": integer,
        "errors_adjusted": num,
        "error_rate": num,
        **{f"{p}_ms": num for p in ("p50", "p95", "p99")},
        "duration_sum_ms": num,
        "self_time_sum_ms": nullable("number"),
        "duration_adjusted_sum_ms": num,
        "duration_min_ms": num,
        "duration_max_ms": num,
        "unattributed_reasons": {"type": "array", "items": text},
        "first_window_unix_nano": integer,
        "last_window_end_unix_nano": integer,
        "self_spans": integer,
        "self_time_sum_ns": nullable("integer"),
        "self_time_adjusted_sum_ns": nullable("integer"),
        **{f"self_{p}_ms": nullable("number") for p in ("p50", "p95", "p99")},
        "self_share": nullable("number"),
        "own_errors": integer,
        "own_error_rate": nullable("number"),
        "cpu_time_sum_ns": integer,
        "exception_events": integer,
        "exceptions": integer,
        "top_exception_types": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"type": text, "count": integer},
                "required": ["type", "count"],
            },
        },
        "cost_usd": nullable("number"),
    }
    return {"type": "object", "required": ["service", "environment", "module", "spans"], "properties": props}


@cache
def openapi_document() -> dict[str, Any]:
    """The whole description, as JSON-ready data (built once)."""
    partial: dict[str, Any] = {"type": "object", "properties": {"errorMessage": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "prodloop receiver",
            "version": "1",
            "description": "OTLP/HTTP traces and logs, deploy and incident events, the GitHub webhook, and "
            "the per-module query.  With receiver.bearer_token set, every endpoint but the webhook "
            "needs 'Authorization: Bearer TOKEN'.  Bodies may be gzip, deflate or zstd.",
        },
        "security": [{}, {"bearer": []}],
        "paths": {
            "/v1/traces": _otlp("traces", "ExportTraceServiceRequest", "ExportTraceServiceResponse", "spans"),
            "/v1/logs": _otlp("logs", "ExportLogsServiceRequest", "ExportLogsServiceResponse", "log records"),
            "/v1/deploys": _events("deploy", "DeployEvent"),
            "/v1/incidents": _events("incident", "IncidentEvent"),
            "/v1/webhooks/github": _github(),
            "/api/v1/modules": _modules(),
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {_JSON: {"schema": {"type": "object"}}},
                        },
                        **_errors(401, 405),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": {
                "ContentEncoding": {
                    "name": "Content-Encoding",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "enum": ["identity", "gzip", "deflate", "zstd"]},
                }
            },
            "headers": {
                "Retry-After": {
                    "description": "seconds to wait before retrying (receiver.retry_after_seconds)",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            },
            "schemas": {
                "DeployEvent": _event_schema("deploy"),
                "IncidentEvent": _event_schema("incident"),
                "EventsAccepted": {
                    "type": "object",
                    "required": ["accepted"],
                    "properties": {"accepted": {"type": "integer", "minimum": 0}},
                },
                "ExportTraceServiceRequest": {
                    "type": "object",
                    "description": "OTLP/JSON (opentelemetry-proto trace_service.proto)",
                    "properties": {"resourceSpans": {"type": "array", "items": {"type": "object"}}},
                },
                "ExportLogsServiceRequest": {
                    "type": "object",
                    "description": "OTLP/JSON (opentelemetry-proto logs_service.proto)",
                    "properties": {"resourceLogs": {"type": "array", "items": {"type": "object"}}},
                },
                "ExportTraceServiceResponse": {
                    "type": "object",
                    "properties": {
                        "partialSuccess": {
                            **partial,
                            "properties": {**partial["properties"], "rejectedSpans": {"type": "string"}},
                        }
                    },
                },
                "ExportLogsServiceResponse": {
                    "type": "object",
                    "properties": {
                        "partialSuccess": {
                            **partial,
                            "properties": {**partial["properties"], "rejectedLogRecords": {"type": "string"}},
                        }
                    },
                },
                "Status": {
                    "type": "object",
                    "description": "google.rpc.Status, as OTLP/HTTP answers failures",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "ModuleRow": _row_schema(),
            },
        },
    }
