"""Local HTTP servers (http.server in a thread, on 127.0.0.1) standing in for GitHub, Jira and
a webhook receiver.  They keep state like the real services and *validate every request*:

* GitHub: against the published OpenAPI description (npm ``@octokit/openapi``, the six
  operations in ``tests/data/github-openapi-subset.json``): the operation must exist for the
  method and path, path/query parameters and the JSON body must match their schemas, and
  the headers GitHub asks for must be present.  The server's own responses are validated
  against the operation's response schema too, so the fake cannot drift from the API.
* Jira: method, path, Basic auth, JSON fields, and every description/comment body against
  the published ADF JSON schema (npm ``@atlaskit/adf-schema``).
* Webhook: the HMAC-SHA256 signature header over the raw body.

Faults are injected per request (``server.inject(...)``): a status with headers, or a
"crash" where the server applies the request and then drops the connection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema

DATA = Path(__file__).resolve().parent.parent / "data"
GITHUB_SPEC = json.loads((DATA / "github-openapi-subset.json").read_text())
ADF_SCHEMA = json.loads((DATA / "adf-schema-v1-full.json").read_text())


class ValidationFailure(AssertionError):
    pass


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Fault:
    """Answer the next matching request with ``status``/``headers`` (or apply it and drop the connection)."""

    method: str
    path_regex: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    drop_after_apply: bool = False


App = Callable[[Request], tuple[int, dict[str, str], Any]]


class FakeServer:
    def __init__(self, app: App) -> None:
        self.app = app
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                req = Request(
                    self.command,
                    parts.path,
                    parse_qs(parts.query, keep_blank_values=True),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                status, headers, payload, drop = server._dispatch(req)
                if drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def _dispatch(self, req: Request) -> tuple[int, dict[str, str], Any, bool]:
        with self._lock:
            self.requests.append(req)
            fault = next(
                (f for f in self.faults if f.method == req.method and re.fullmatch(f.path_regex, req.path)),
                None,
            )
            if fault is not None:
                self.faults.remove(fault)
            try:
                if fault is not None and not fault.drop_after_apply:
                    return fault.status, fault.headers, fault.body, False
                status, headers, payload = self.app(req)
                return status, headers, payload, fault is not None
            except ValidationFailure as exc:
                self.failures.append(f"{req.method} {req.path}: {exc}")
                return 422, {}, {"message": f"test server: invalid request: {exc}"}, False

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def of(self, method: str, path_regex: str = ".*") -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(path_regex, r.path)]


# -- OpenAPI 3.0 schemas as JSON Schema -----------------------------------------------------------


def openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable`` as JSON Schema (draft 4) types; everything else is the same."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
    for key in ("properties", "patternProperties"):
        if isinstance(node.get(key), dict):
            out[key] = {k: openapi_to_jsonschema(v) for k, v in node[key].items()}
    if node.get("nullable"):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _validate(schema: Any, value: Any, what: str) -> None:
    validator = jsonschema.Draft4Validator(openapi_to_jsonschema(schema))
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        raise ValidationFailure(f"{what}: {e.message[:300]} at {'/'.join(map(str, e.path)) or '(root)'}")


def _template_regex(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")


_OPS = [
    (op["method"], _template_regex(op["path"]), op_id, op) for op_id, op in GITHUB_SPEC["operations"].items()
]


def github_operation(req: Request) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The OpenAPI operation of a request, validated: (operationId, operation, path params)."""
    found = [
        (op_id, op, m) for method, rx, op_id, op in _OPS if method == req.method and (m := rx.match(req.path))
    ]
    if not found:
        raise ValidationFailure(f"no operation {req.method} {req.path} in {GITHUB_SPEC['source']}")
    op_id, op, match = found[0]
    params = match.groupdict()
    declared = {p["name"]: p for p in op["parameters"]}
    for name, value in params.items():
        schema = declared[name]["schema"]
        coerced: Any = int(value) if schema.get("type") == "integer" and value.isdigit() else value
        _validate(schema, coerced, f"{op_id}: path parameter {name}")
    for name, values in req.query.items():
        p = declared.get(name)
        if p is None or p["in"] != "query":
            raise ValidationFailure(f"{op_id}: unknown query parameter {name!r}")
        v: Any = values[-1]
        if p["schema"].get("type") == "integer":
            if not v.isdigit():
                raise ValidationFailure(f"{op_id}: query parameter {name}={v!r} is not an integer")
            v = int(v)
        _validate(p["schema"], v, f"{op_id}: query parameter {name}")
    for p in op["parameters"]:
        if p.get("required") and p["in"] == "query" and p["name"] not in req.query:
            raise ValidationFailure(f"{op_id}: missing required query parameter {p['name']}")
    if op["request_schema"] is not None:
        if not req.body:
            if op["request_required"]:
                raise ValidationFailure(f"{op_id}: a JSON body is required")
        else:
            if not req.headers.get("content-type", "").startswith("application/json"):
                raise ValidationFailure(f"{op_id}: Content-Type must be application/json")
            _validate(op["request_schema"], req.json, f"{op_id}: request body")
    elif req.body:
        raise ValidationFailure(f"{op_id}: takes no body")
    return op_id, op, params


# -- GitHub ----------------------------------------------------------------------------------------


class GitHubApi:
    """A GitHub Issues REST API for one repository, state kept in memory."""

    def __init__(self, owner: str, repo: str, token: str) -> None:
        self.owner, self.repo, self.token = owner, repo, token
        self.issues: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[str]] = {}
        self.base = "https://api.github.com"
        self._lock = threading.Lock()

    def _user(self, login: str) -> dict[str, Any]:
        u = f"{self.base}/users/{login}"
        return {
            "login": login,
            "id": abs(hash(login)) % 10**6,
            "node_id": "U_" + login,
            "avatar_url": f"https://avatars.githubusercontent.com/{login}",
            "gravatar_id": "",
            "url": u,
            "html_url": f"https://github.com/{login}",
            "followers_url": f"{u}/followers",
            "following_url": f"{u}/following{{/other_user}}",
            "gists_url": f"{u}/gists{{/gist_id}}",
            "starred_url": f"{u}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{u}/subscriptions",
            "organizations_url": f"{u}/orgs",
            "repos_url": f"{u}/repos",
            "events_url": f"{u}/events{{/privacy}}",
            "received_events_url": f"{u}/received_events",
            "type": "User",
            "site_admin": False,
        }

    def _issue(
        self, number: int, title: str, body: str, labels: list[str], assignees: list[str]
    ) -> dict[str, Any]:
        repo_url = f"{self.base}/repos/{self.owner}/{self.repo}"
        url = f"{repo_url}/issues/{number}"
        now = "2026-01-01T00:00:00Z"
        return {
            "id": 10_000 + number,
            "node_id": f"I_{number}",
            "url": url,
            "repository_url": repo_url,
            "labels_url": f"{url}/labels{{/name}}",
            "comments_url": f"{url}/comments",
            "events_url": f"{url}/events",
            "html_url": f"https://github.com/{self.owner}/{self.repo}/issues/{number}",
            "number": number,
            "state": "open",
            "state_reason": None,
            "title": title,
            "body": body,
            "user": self._user("prodloop-bot"),
            "labels": [self._label(x) for x in labels],
            "assignee": self._user(assignees[0]) if assignees else None,
            "assignees": [self._user(a) for a in assignees],
            "milestone": None,
            "locked": False,
            "comments": 0,
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "author_association": "NONE",
        }

    def _label(self, name: str) -> dict[str, Any]:
        return {
            "id": abs(hash(name)) % 10**6,
            "node_id": "L_" + name,
            "url": f"{self.base}/repos/{self.owner}/{self.repo}/labels/{name}",
            "name": name,
            "description": None,
            "color": "ededed",
            "default": False,
        }

    def close_by_hand(self, number: int, closed_at: str = "2026-01-01T00:00:00Z") -> None:
        with self._lock:
            self.issues[number]["state"] = "closed"
            self.issues[number]["state_reason"] = "completed"
            self.issues[number]["closed_at"] = closed_at

    def __call__(self, req: Request) -> tuple[int, dict[str, str], Any]:
        h = req.headers
        if h.get("authorization") != f"Bearer {self.token}":
            return 401, {}, {"message": "Bad credentials"}
        if h.get("accept") != "application/vnd.github+json":
            raise ValidationFailure(f"Accept must be application/vnd.github+json, got {h.get('accept')!r}")
        if h.get("x-github-api-version") != "2022-11-28":
            raise ValidationFailure("X-GitHub-Api-Version: 2022-11-28 is required")
        if not h.get("user-agent"):
            raise ValidationFailure("GitHub rejects requests without a User-Agent")
        op_id, op, params = github_operation(req)
        if (params["owner"], params["repo"]) != (self.owner, self.repo):
            return 404, {}, {"message": "Not Found"}
        with self._lock:
            status, payload = self._apply(op_id, req, params)
        if status == op["success_status"] and op["response_schema"] is not None:
            _validate(op["response_schema"], payload, f"{op_id}: the test server's own response")
        return status, {"X-RateLimit-Remaining": "4999"}, payload

    def _apply(self, op_id: str, req: Request, params: dict[str, str]) -> tuple[int, Any]:
        body = req.json
        if op_id == "issues/create":
            number = len(self.issues) + 1
            issue = self._issue(
                number,
                str(body["title"]),
                body.get("body", ""),
                [str(x) for x in body.get("labels", [])],
                body.get("assignees", []),
            )
            self.issues[number] = issue
            self.comments[number] = []
            return 201, issue
        if op_id == "issues/list-for-repo":
            wanted = set(req.query.get("labels", [""])[-1].split(",")) - {""}
            state = req.query.get("state", ["open"])[-1]
            per_page = int(req.query.get("per_page", ["30"])[-1])
            page = int(req.query.get("page", ["1"])[-1])
            found = [
                i
                for i in sorted(self.issues.values(), key=lambda i: -i["number"])
                if wanted <= {lab["name"] for lab in i["labels"]} and (state == "all" or i["state"] == state)
            ]
            return 200, found[(page - 1) * per_page : page * per_page]
        number = int(params["issue_number"])
        if number not in self.issues:
            return 404, {"message": "Not Found"}
        issue = self.issues[number]
        if op_id == "issues/get":
            return 200, issue
        if op_id == "issues/update":
            if body.get("state") == "closed":
                issue["state"] = "closed"
                issue["state_reason"] = body.get("state_reason", "completed")
                issue["closed_at"] = "2026-01-01T00:00:00Z"
            return 200, issue
        if op_id == "issues/create-comment":
            self.comments[number].append(body["body"])
            issue["comments"] += 1
            u = f"{self.base}/repos/{self.owner}/{self.repo}/issues/comments/{number * 1000 + issue['comments']}"
            return 201, {
                "id": number * 1000 + issue["comments"],
                "node_id": "IC_x",
                "url": u,
                "html_url": issue["html_url"] + f"#issuecomment-{issue['comments']}",
                "body": body["body"],
                "user": self._user("prodloop-bot"),
                "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z",
                "issue_url": issue["url"],
                "author_association": "NONE",
            }
        if op_id == "issues/add-labels":
            names = body["labels"] if isinstance(body, dict) else body
            for name in names:
                if name not in {lab["name"] for lab in issue["labels"]}:
                    issue["labels"].append(self._label(name))
            return 200, issue["labels"]
        raise ValidationFailure(f"unhandled {op_id}")


# -- Jira ------------------------------------------------------------------------------------------

_ADF = jsonschema.Draft4Validator(ADF_SCHEMA)


def validate_adf(doc: Any, what: str) -> None:
    errors = list(_ADF.iter_errors(doc))
    if errors:
        raise ValidationFailure(f"{what}: not valid ADF: {errors[0].message[:300]}")


class JiraApi:
    """Jira Cloud REST v3: issues, comments, transitions, JQL search on labels."""

    def __init__(self, email: str, token: str, project: str) -> None:
        self.auth = "Basic " + base64.b64encode(f"{email}:{token}".encode()).decode()
        self.project = project
        self.issues: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def close_by_hand(self, key: str) -> None:
        self.issues[key]["status"] = "done"

    def __call__(self, req: Request) -> tuple[int, dict[str, str], Any]:
        if req.headers.get("authorization") != self.auth:
            return 401, {}, {"errorMessages": ["unauthorized"]}
        if req.body and not req.headers.get("content-type", "").startswith("application/json"):
            raise ValidationFailure("Content-Type must be application/json")
        with self._lock:
            return self._apply(req)

    def _apply(self, req: Request) -> tuple[int, dict[str, str], Any]:
        body = req.json
        if req.method == "POST" and req.path == "/rest/api/3/issue":
            fields = body.get("fields") if isinstance(body, dict) else None
            if not isinstance(fields, dict):
                raise ValidationFailure("body must be {fields: {...}}")
            if fields.get("project") != {"key": self.project}:
                raise ValidationFailure(f"fields.project must be {{key: {self.project}}}")
            if not isinstance(fields.get("issuetype"), dict) or not fields["issuetype"].get("name"):
                raise ValidationFailure("fields.issuetype.name is required")
            summary = fields.get("summary")
            if not isinstance(summary, str) or not summary or len(summary) > 255 or "\n" in summary:
                raise ValidationFailure("fields.summary: one line, 1-255 characters")
            validate_adf(fields.get("description"), "fields.description")
            labels = fields.get("labels", [])
            if not all(isinstance(x, str) and x and " " not in x for x in labels):
                raise ValidationFailure("fields.labels: strings without spaces")
            n = len(self.issues) + 1
            key = f"{self.project}-{n}"
            self.issues[key] = {"fields": fields, "status": "todo", "id": str(10000 + n)}
            self.comments[key] = []
            return (
                201,
                {},
                {
                    "id": str(10000 + n),
                    "key": key,
                    "self": f"https://x.atlassian.net/rest/api/3/issue/{10000 + n}",
                },
            )
        if req.method == "POST" and req.path == "/rest/api/3/search/jql":
            jql = body.get("jql", "")
            m = re.fullmatch(r'project = "([A-Z0-9_]+)" AND labels = "([^"]+)" ORDER BY created ASC', jql)
            if m is None:
                raise ValidationFailure(f"unexpected JQL {jql!r}")
            found = [
                {
                    "id": v["id"],
                    "key": k,
                    "fields": {"summary": v["fields"]["summary"], "labels": v["fields"]["labels"]},
                }
                for k, v in self.issues.items()
                if k.startswith(m.group(1) + "-") and m.group(2) in v["fields"]["labels"]
            ]
            return 200, {}, {"issues": found, "isLast": True}
        m = re.fullmatch(r"/rest/api/3/issue/([A-Z0-9_]+-\d+)(/comment|/transitions)?", req.path)
        if m is None or m.group(1) not in self.issues:
            return (
                404,
                {},
                {"errorMessages": ["Issue does not exist or you do not have permission to see it."]},
            )
        key, sub = m.group(1), m.group(2)
        issue = self.issues[key]
        if req.method == "GET" and sub is None:
            done = issue["status"] == "done"
            return (
                200,
                {},
                {
                    "key": key,
                    "fields": {
                        "status": {
                            "name": "Done" if done else "To Do",
                            "statusCategory": {"key": "done" if done else "new"},
                        },
                        "resolutiondate": "2026-01-01T00:00:00.000+0000" if done else None,
                    },
                },
            )
        if req.method == "POST" and sub == "/comment":
            validate_adf(body.get("body"), "comment body")
            self.comments[key].append(body["body"])
            return 201, {}, {"id": str(len(self.comments[key]))}
        if req.method == "GET" and sub == "/transitions":
            return (
                200,
                {},
                {
                    "transitions": [
                        {"id": "11", "name": "To Do", "to": {"statusCategory": {"key": "new"}}},
                        {"id": "31", "name": "Done", "to": {"statusCategory": {"key": "done"}}},
                    ]
                },
            )
        if req.method == "POST" and sub == "/transitions":
            if body != {"transition": {"id": "31"}}:
                raise ValidationFailure(f"unexpected transition {body}")
            issue["status"] = "done"
            return 204, {}, None
        raise ValidationFailure(f"unhandled {req.method} {req.path}")


# -- webhook ---------------------------------------------------------------------------------------


class WebhookReceiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.events: list[dict[str, Any]] = []
        self.seen_keys: set[str] = set()

    def __call__(self, req: Request) -> tuple[int, dict[str, str], Any]:
        if req.method != "POST":
            raise ValidationFailure("webhooks are POSTs")
        if req.headers.get("content-type") != "application/json":
            raise ValidationFailure("Content-Type must be application/json")
        expected = "sha256=" + hmac.new(self.secret, req.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(req.headers.get("x-prodloop-signature-256", ""), expected):
            return 401, {}, {"error": "bad signature"}
        key = req.headers.get("idempotency-key", "")
        if not key:
            raise ValidationFailure("Idempotency-Key is required")
        event = req.json
        if event.get("event") != req.headers.get("x-prodloop-event"):
            raise ValidationFailure("X-Prodloop-Event must match the body's event")
        if key not in self.seen_keys:
            self.seen_keys.add(key)
            self.events.append(event)
        return 202, {}, {"ok": True}


def serve(app: App) -> Iterator[FakeServer]:
    with FakeServer(app) as server:
        yield server
        assert not server.failures, "invalid requests:\n" + "\n".join(server.failures)
