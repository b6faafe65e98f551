"""Command line entry point: ``workflowsoft-emulator`` / ``python -m airflow_provider_workflowsoft.emulator``.

Starts the emulator in the foreground, prints how to reach it, and stops cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .scenario import ScenarioError
from .server import EmulatorServer
from .state import EMPTY_POLL_SHAPES, ERROR_SHAPES, POLL_SEMANTICS, TOKEN_SHAPES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workflowsoft-emulator",
        description="Run a local emulator of the Workflowsoft REST API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind; 0 picks a free port (default: 8765)")
    parser.add_argument("--scenario", help="scenario file (.json, or .yaml/.yml); default: built-in demo")
    parser.add_argument("--state-file", help="persist state to this JSON file and reload it on start")
    parser.add_argument("--poll-semantics", choices=POLL_SEMANTICS, help="default: once")
    parser.add_argument("--empty-poll", choices=EMPTY_POLL_SHAPES, help="answer to an empty poll (default: 204)")
    parser.add_argument("--token-shape", choices=TOKEN_SHAPES, help="apitoken answer shape (default: string)")
    parser.add_argument("--error-shape", choices=ERROR_SHAPES, help="error body shape (default: message)")
    parser.add_argument("--latency-ms", type=int, help="delay every /api/ answer by this many milliseconds")
    parser.add_argument("--rate-limit", type=float, metavar="RPS",
                        help="answer 429 (Retry-After in whole seconds) over this many API requests per second, "
                        "a token bucket for the whole tenant (default: no limit)")
    parser.add_argument("--rate-limit-burst", type=float, metavar="N",
                        help="requests the bucket holds (default: one second's worth of --rate-limit)")
    parser.add_argument("--port-file", help="write the bound port to this file once listening")
    parser.add_argument("--quiet", action="store_true", help="do not print one line per request")
    return parser


def _write_port_file(path: Path, port: int) -> None:
    # Atomic, so a script polling for the file never reads an empty or partial port.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.latency_ms is not None and args.latency_ms < 0:
        print("error: --latency-ms must be >= 0", file=sys.stderr)
        return 2
    try:
        server = EmulatorServer(
            scenario=args.scenario,
            host=args.host,
            port=args.port,
            state_file=args.state_file,
            quiet=args.quiet,
            poll_semantics=args.poll_semantics,
            empty_poll=args.empty_poll,
            token_shape=args.token_shape,
            error_shape=args.error_shape,
            latency_ms=args.latency_ms,
            rate_limit=args.rate_limit,
            rate_limit_burst=args.rate_limit_burst,
        )
        server.start()
    except (ScenarioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    if args.port_file:
        _write_port_file(Path(args.port_file), server.port)
    login, password = server.admin_credentials
    settings = server.state.get_settings()
    print(f"Workflowsoft emulator listening on {server.base_url}", flush=True)
    print(f"  scenario:     {server.state.scenario.source}")
    print(f"  static token: {server.static_token or '(none)'}")
    print(f"  admin login:  {login} / {password}")
    print(f"  settings:     {', '.join(f'{k}={v}' for k, v in settings.items())}")
    if args.state_file:
        print(f"  state file:   {args.state_file}")
    print(f"  admin API:    {server.base_url}/_emulator/state", flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        server.stop()
        print("Workflowsoft emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
