"""HTTP front end of the Workflowsoft emulator.

A stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive (every answer carries a
Content-Length, so clients can reuse connections), routing the Workflowsoft ``/api/`` endpoints to
:class:`~.state.EmulatorState`, plus unauthenticated admin endpoints under ``/_emulator/`` that are
never subject to fault injection. :class:`EmulatorServer` runs it in a background thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import html
import math
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .scenario import FieldValueError, Scenario, json_dumps, json_loads
from .state import DEFAULT_TOKEN_LIFETIME, ApiError, EmulatorState, FaultDecision

ADMIN_PREFIX = "/_emulator/"
API_PREFIX = "/api/"
MAX_BODY_BYTES = 10 * 1024 * 1024


class _Response:
    """An answer to write: status, body bytes, content type and extra headers."""

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = "application/json; charset=utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type if body or status != 204 else None
        self.headers = dict(headers or {})


def _json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> _Response:
    return _Response(status, json_dumps(payload).encode("utf-8"), headers=headers)


_RouteHandler = Callable[[re.Match[str], Mapping[str, str], Any, "str | None"], _Response]


class _DropConnection(Exception):
    """Close the connection without writing any answer."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Re-binding a fixed port right after a restart must not fail on TIME_WAIT sockets.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        self._open_sockets: set[socket.socket] = set()
        self._sockets_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._sockets_lock:
            self._open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._sockets_lock:
            self._open_sockets.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        # Keep-alive connections would otherwise keep being served by their threads after stop().
        with self._sockets_lock:
            sockets = list(self._open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "WorkflowsoftEmulator/1.0"
    server: _HTTPServer

    # ------------------------------------------------------------------ plumbing

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.emulator.quiet:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise ApiError(400, "Invalid Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise ApiError(413, "Request body too large")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            size = int(size_line or b"0", 16)
            if size == 0:
                # Consume trailers up to the blank line.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(8)

    def _dispatch(self) -> None:
        started = time.monotonic()
        emulator = self.server.emulator
        state = emulator.state
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        is_admin = (path + "/").startswith(ADMIN_PREFIX)
        body_bytes = b""
        parsed_body: Any = None
        fault = FaultDecision()
        response: _Response | None = None
        try:
            try:
                body_bytes = self._read_body()
            except ApiError:
                # The unread body would be parsed as the next request: give up on this connection.
                self.close_connection = True
                raise
            parsed_body = self._parse_body(body_bytes)
            if is_admin:
                response = self._admin(path, query, parsed_body)
            elif path.startswith(API_PREFIX.rstrip("/")):
                fault = state.decide_fault(self.command, path)
                if fault.latency_s:
                    time.sleep(fault.latency_s)
                refused_for = state.take_rate_token()
                if refused_for is not None:  # over the tenant's rate limit: 429, Retry-After in whole seconds
                    raise ApiError(429, "Rate limit exceeded: too many requests",
                                   {"Retry-After": str(max(1, math.ceil(refused_for)))})
                if fault.action == "drop":
                    raise _DropConnection
                if fault.action == "error":
                    assert fault.status is not None
                    headers = {}
                    if fault.retry_after is not None:
                        headers["Retry-After"] = _retry_after_text(fault.retry_after)
                    message = f"Injected fault: HTTP {fault.status} {_phrase(fault.status)}"
                    response = self._error(fault.status, message, headers)
                else:
                    response = self._api(path, query, parsed_body)
                    if fault.action == "commit_then_drop":
                        raise _DropConnection
            else:
                response = self._error(404, f"No such endpoint: {self.command} {path}")
        except _DropConnection:
            response = None
        except ApiError as exc:
            response = self._error(exc.status, exc.message, exc.headers)
        except Exception as exc:  # a bug in the emulator must still produce an answer
            response = self._error(500, f"Emulator internal error: {type(exc).__name__}: {exc}")
        status = response.status if response is not None else None
        self._log(is_admin, path, query, body_bytes, parsed_body, status, fault, started)
        if response is None:
            self._drop()
        else:
            self._write(response)

    def _parse_body(self, body: bytes) -> Any:
        if not body.strip():
            return None
        try:
            return json_loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"Request body is not valid JSON: {exc}") from None

    def _log(
        self,
        is_admin: bool,
        path: str,
        query: Mapping[str, str],
        body_bytes: bytes,
        parsed_body: Any,
        status: int | None,
        fault: FaultDecision,
        started: float,
    ) -> None:
        if parsed_body is None and body_bytes.strip():
            body: Any = body_bytes.decode("utf-8", "replace")[:10_000]
        else:
            body = parsed_body
        host, port = self.client_address[0], self.client_address[1]
        # The Authorization header is deliberately never logged.
        entry = {
            "method": self.command,
            "path": path,
            "query": dict(query),
            "status": status,
            "client": f"{host}:{port}",
            "on_behalf_of": self.headers.get("X-OnBehalfOf-Id"),
            "body": body,
            "fault": fault.label,
            "duration_ms": round((time.monotonic() - started) * 1000, 2),
        }
        self.server.emulator.state.log_request(entry, admin=is_admin)

    def setup(self) -> None:
        super().setup()
        # Small answers on keep-alive connections would otherwise wait for Nagle/delayed-ACK (~40 ms).
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _write(self, response: _Response) -> None:
        try:
            self.send_response(response.status)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if response.body and self.command != "HEAD":
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _drop(self) -> None:
        # Shut the socket down without writing a byte: the client sees the server hang up
        # (RemoteDisconnected / "connection aborted"), exactly like a crashed gateway.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> _Response:
        shape = self.server.emulator.state.settings.error_shape
        headers = dict(headers or {})
        if status == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="workflowsoft"')
        if shape == "error":
            return _json_response(status, {"error": message}, headers)
        if shape == "text":
            return _Response(status, message.encode("utf-8"), "text/plain; charset=utf-8", headers)
        if shape == "html":
            title = html.escape(f"{status} {_phrase(status)}")
            page = (
                f"<!DOCTYPE html><html><head><title>{title}: {html.escape(message)}</title></head>"
                f"<body><h1>{title}</h1><p>{html.escape(message)}</p></body></html>"
            )
            return _Response(status, page.encode("utf-8"), "text/html; charset=utf-8", headers)
        return _json_response(status, {"Message": message}, headers)

    # ------------------------------------------------------------------ API

    def _bearer_token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None

    def _require_bearer(self) -> None:
        token = self._bearer_token()
        if token is None:
            raise ApiError(401, "Authorization: Bearer <token> header is required")
        if not self.server.emulator.state.token_is_valid(token):
            raise ApiError(401, "The API token is invalid or expired")

    def _basic_admin_ok(self) -> bool:
        auth = self.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        login, sep, password = decoded.partition(":")
        return bool(sep) and self.server.emulator.state.check_admin(login, password)

    def _api(self, path: str, query: Mapping[str, str], body: Any) -> _Response:
        state = self.server.emulator.state
        method = self.command
        on_behalf = self.headers.get("X-OnBehalfOf-Id")
        on_behalf = on_behalf.strip() if on_behalf is not None else None

        if path == "/api/v2/app/apitoken":
            self._allow(method, "GET")
            if not self._basic_admin_ok():
                token = self._bearer_token()
                if token is None or not state.token_is_valid(token):
                    raise ApiError(
                        401,
                        "Administrator credentials (HTTP Basic) or a valid Bearer token are required",
                        {"WWW-Authenticate": 'Basic realm="workflowsoft"'},
                    )
            lifetime = _int_param(query, "lifeTimeInSec", DEFAULT_TOKEN_LIFETIME, positive=True)
            token = state.mint_token(lifetime)
            shape = state.settings.token_shape
            if shape == "object":
                return _json_response(200, {"token": token})
            if shape == "text":
                return _Response(200, token.encode("ascii"), "text/plain; charset=utf-8")
            return _json_response(200, token)

        self._require_bearer()
        for pattern, methods, handler in self._routes():
            match = pattern.fullmatch(path)
            if match:
                self._allow(method, *methods)
                return handler(match, query, body, on_behalf)
        raise ApiError(404, f"No such endpoint: {method} {path}")

    def _routes(self) -> list[tuple[re.Pattern[str], tuple[str, ...], _RouteHandler]]:
        return [
            (re.compile(r"/api/v2/workflows"), ("GET",), self._workflows),
            (re.compile(r"/api/v2/workflows/(\d+)/tasks"), ("GET",), self._steps),
            (re.compile(r"/api/v2/workflows/instances/new-integrations"), ("GET",), self._poll),
            (re.compile(r"/api/v2/workflows/instances/tasks/(\d+)/variables"), ("GET",), self._variables),
            (re.compile(r"/api/v2/workflows/instances/variables"), ("POST",), self._update),
            (re.compile(r"/api/v2/tasks/(\d+)/action"), ("PATCH",), self._complete),
            (re.compile(r"/api/users/search"), ("GET",), self._users),
            (re.compile(r"/api/v2/workflows/start"), ("POST",), self._start),
            (re.compile(r"/api/v2/tasks"), ("POST",), self._task),
        ]

    def _allow(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            raise ApiError(
                405,
                f"Method {method} not allowed here (allowed: {', '.join(allowed)})",
                {"Allow": ", ".join(allowed)},
            )

    def _workflows(self, match: re.Match[str], query: Mapping[str, str], body: Any, obo: str | None) -> _Response:
        limit = _int_param(query, "limit", 100, positive=True)
        return _json_response(200, self.server.emulator.state.list_workflows(query.get("searchTerm"), limit))

    def _steps(self, match: re.Match[str], query: Mapping[str, str], body: Any, obo: str | None) -> _Response:
        return _json_response(200, self.server.emulator.state.list_integration_steps(int(match.group(1))))

    def _poll(self, match: re.Match[str], query: Mapping[str, str], body: Any, obo: str | None) -> _Response:
        state = self.server.emulator.state
        raw = query.get("id")
        if raw is None or not re.fullmatch(r"\s*-?\d+\s*", raw):
            raise ApiError(400, f"Query parameter id (IntegrationDiagramID) must be an integer; got {raw!r}")
        found = state.poll(int(raw))
        if found is not None:
            return _json_response(200, found)
        shape = state.settings.empty_poll
        if shape == "204":
            return _Response(204)
        if shape == "empty200":
            return _Response(200, b"")
        if shape == "null-id":
            return _json_response(200, {"IntegrationInstanceId": None, "ProcessInstanceId": None})
        return _Response(200, shape.encode("ascii"))  # the literal JSON texts null, {} and []

    def _variables(self, match: re.Match[str], query: Mapping[str, str], body: Any, obo: str | None) -> _Response:
        return _json_response(200, self.server.emulator.state.get_variables(int(match.group(1))))

    def _update(self, match: re.Match[str], query: Mapping[str, str], body: Any, obo: str | None) -> _Response:
        if not obo:
            raise ApiError(400, "Header X-OnBehalfOf-Id is required")
        if not isinstance(body, Mapping):
            raise ApiError(400, 'Body must be a JSON object {"TaskId": ..., "Fields": {...}}')
        fields = self.server.emulator.state.update_variables(body.get("TaskId"), body.get("Fields"), obo)
        return _json_response(200, fields)

    def _complete(self, match: re.Match[str], query: Mapping[str, str], body: Any, obo: str | None) -> _Response:
        self.server.emulator.state.complete(int(match.group(1)), body, obo)
        return _json_response(200, {})

    def _users(self, match: re.Match[str], query: Mapping[str, str], body: Any, obo: str | None) -> _Response:
        limit = _int_param(query, "limit", 15, positive=True)
        if query.get("entityType", "users") not in ("users", ""):
            return _json_response(200, [])
        return _json_response(200, self.server.emulator.state.search_users(query.get("Query"), limit))

    def _start(self, match: re.Match[str], query: Mapping[str, str], body: Any, obo: str | None) -> _Response:
        return _json_response(200, self.server.emulator.state.start_process(body, obo))

    def _task(self, match: re.Match[str], query: Mapping[str, str], body: Any, obo: str | None) -> _Response:
        return _json_response(200, self.server.emulator.state.create_task(body, obo))

    # ------------------------------------------------------------------ admin

    def _admin(self, path: str, query: Mapping[str, str], body: Any) -> _Response:
        emulator = self.server.emulator
        state = emulator.state
        method = self.command
        route = path[len(ADMIN_PREFIX) - 1 :]
        try:
            if route == "/state":
                self._allow(method, "GET")
                return _json_response(200, state.snapshot())
            if route == "/requests":
                self._allow(method, "GET", "DELETE")
                if method == "DELETE":
                    state.clear_request_log()
                    return _json_response(200, {"cleared": True})
                admin = query.get("kind") == "admin"
                return _json_response(200, state.request_log(admin=admin))
            if route == "/instances":
                self._allow(method, "POST")
                data = _mapping(body)
                allowed = {"integration_step_id", "process_diagram_id", "count", "values", "created_by"}
                unknown = sorted(set(data) - allowed)
                if unknown:
                    raise ApiError(400, f"Unknown key(s): {', '.join(unknown)}")
                created = state.create_instances(
                    data.get("integration_step_id"),
                    process_diagram_id=data.get("process_diagram_id"),
                    count=data.get("count", 1),
                    values=_mapping(data.get("values")),
                    created_by=data.get("created_by", "emulator"),
                )
                return _json_response(201, created)
            reach = re.fullmatch(r"/processes/(\d+)/reach", route)
            if reach:
                self._allow(method, "POST")
                data = _mapping(body)
                unknown = sorted(set(data) - {"integration_step_id", "values"})
                if unknown:
                    raise ApiError(400, f"Unknown key(s): {', '.join(unknown)}")
                step = data.get("integration_step_id")
                if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
                    raise ApiError(400, f"integration_step_id must be an integer; got {step!r}")
                created = state.reach(int(reach.group(1)), step, _mapping(data.get("values")))
                return _json_response(201, created)
            if route == "/reset":
                self._allow(method, "POST")
                state.reset()
                return _json_response(200, {"reset": True})
            if route == "/settings":
                self._allow(method, "GET", "PATCH", "POST")
                if method != "GET":
                    return _json_response(200, state.update_settings(**_mapping(body)))
                return _json_response(200, state.get_settings())
            if route == "/faults":
                self._allow(method, "GET", "POST", "DELETE")
                if method == "POST":
                    return _json_response(200, state.set_faults(_mapping(body)))
                if method == "DELETE":
                    state.clear_faults()
                    return _json_response(200, {"faults": None})
                return _json_response(200, {"faults": state.get_faults()})
            if route == "/tokens/expire":
                self._allow(method, "POST")
                state.expire_tokens()
                return _json_response(200, {"expired": True})
            if route == "/tokens":
                self._allow(method, "POST")
                data = _mapping(body)
                lifetime = data.get("lifetime_s", DEFAULT_TOKEN_LIFETIME)
                return _json_response(201, {"token": state.mint_token(lifetime)})
            if route == "/rate-limit":
                self._allow(method, "GET", "POST")
                if method == "POST":
                    data = _mapping(body)
                    unknown = sorted(set(data) - {"requests_per_second", "burst"})
                    if unknown:
                        raise ApiError(400, f"Unknown key(s): {', '.join(unknown)}")
                    state.update_settings(rate_limit=data.get("requests_per_second", 0),
                                          rate_limit_burst=data.get("burst", 0))
                return _json_response(200, state.rate_limit_stats())
            if route == "/health":
                return _json_response(200, {"ok": True})
        except LookupError as exc:
            raise ApiError(404, str(exc.args[0] if exc.args else exc)) from None
        except (ValueError, TypeError, FieldValueError) as exc:
            raise ApiError(400, str(exc)) from None
        raise ApiError(404, f"No such admin endpoint: {method} {path}")


def _mapping(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ApiError(400, "Body must be a JSON object")
    return dict(value)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _retry_after_text(seconds: float | None) -> str:
    if seconds is None:
        return "1"
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def _int_param(query: Mapping[str, str], name: str, default: int, *, positive: bool = False) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\s*[-+]?\d+\s*", raw):
        raise ApiError(400, f"Query parameter {name} must be an integer; got {raw!r}")
    value = int(raw)
    if positive and value <= 0:
        raise ApiError(400, f"Query parameter {name} must be a positive integer; got {raw!r}")
    return value


# --------------------------------------------------------------------------- EmulatorServer


class EmulatorServer:
    """The emulator as a context manager running in a background thread.

    ``scenario`` is ``None`` (built-in demo), a path to a JSON/YAML file, a mapping or a
    :class:`Scenario`. ``settings`` are the behaviour switches (``poll_semantics``,
    ``empty_poll``, ``token_shape``, ``error_shape``, ``latency_ms``).
    """

    def __init__(
        self,
        scenario: Scenario | Mapping[str, Any] | str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: str | Path | None = None,
        *,
        quiet: bool = True,
        **settings: Any,
    ) -> None:
        self.state = EmulatorState(scenario, state_file=state_file, **settings)
        self.host = host
        self.port = port
        self.quiet = quiet
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> EmulatorServer:
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="workflowsoft-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_open_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Run in the calling thread until :meth:`stop` is called from elsewhere (CLI use)."""
        self.start()
        assert self._thread is not None
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.2)

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
        return f"http://{host}:{self.port}"

    @property
    def static_token(self) -> str | None:
        """First static API token of the scenario (``demo-token`` for the demo)."""
        return self.state.scenario.api_tokens[0] if self.state.scenario.api_tokens else None

    @property
    def admin_credentials(self) -> tuple[str, str]:
        return self.state.scenario.admin_login, self.state.scenario.admin_password

    # ------------------------------------------------------------------ admin helpers

    def create_instances(
        self,
        integration_step_id: int | None = None,
        *,
        process_diagram_id: int | None = None,
        count: int = 1,
        values: Mapping[str, Any] | None = None,
        created_by: str | int | None = "emulator",
    ) -> list[dict[str, int]]:
        """Queue pending integration instances; see :meth:`EmulatorState.create_instances`."""
        return self.state.create_instances(
            integration_step_id,
            process_diagram_id=process_diagram_id,
            count=count,
            values=values,
            created_by=created_by,
        )

    def snapshot(self) -> dict[str, Any]:
        return self.state.snapshot()

    def reach(self, process_instance_id: int, integration_step_id: int | None = None,
              values: Mapping[str, Any] | None = None) -> list[dict[str, int]]:
        """Make a started process reach its pending integration step(s) now; see :meth:`EmulatorState.reach`."""
        return self.state.reach(process_instance_id, integration_step_id, values)

    def request_log(self, *, admin: bool = False) -> list[dict[str, Any]]:
        return self.state.request_log(admin=admin)

    def clear_request_log(self) -> None:
        self.state.clear_request_log()

    def set_faults(self, **options: Any) -> dict[str, Any]:
        return self.state.set_faults(**options)

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def update_settings(self, **changes: Any) -> dict[str, Any]:
        return self.state.update_settings(**changes)

    def expire_tokens(self) -> None:
        self.state.expire_tokens()

    def mint_token(self, lifetime_s: int = DEFAULT_TOKEN_LIFETIME) -> str:
        return self.state.mint_token(lifetime_s)

    def reset(self) -> None:
        self.state.reset()

    def rate_limit_stats(self) -> dict[str, Any]:
        """Return the tenant's rate limit and its counts (``refused``: 429 answers) since the log was cleared."""
        return self.state.rate_limit_stats()
