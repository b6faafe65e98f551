"""Run ``airflow`` commands as forks of a pre-imported Airflow: the DAG-run tests' launcher.

Each ``airflow dags test`` would spend most of its CPU before the DAG's first task: about 1.5 s importing
Airflow and 5 s building the in-process execution API and its versioned routes on its first request (Airflow 3),
against about 1 s for a small DAG's run itself. The tests start some seventy of them on two cores. So, as
Airflow's own executors fork task processes from a pre-imported parent, a *server* per import-time environment
(``AIRFLOW_HOME``, every ``AIRFLOW*`` setting but connections and Variables, ``PYTHONPATH``) imports Airflow once,
builds and warms the execution API, and forks one child per command. A child takes the client's stdin, stdout,
stderr, working directory, environment and arguments, and then runs ``airflow``'s own ``main()`` and exits the
way the ``airflow`` script does: it is a separate process that sees what a user's ``airflow dags test`` sees.

The *client* (``python prefork.py run <socket> <args>``, standard library only, so it starts in milliseconds) is
what a test starts and signals: it forwards SIGTERM, SIGINT and SIGHUP to the child's process group and exits
with the child's status (by the same signal, when the child was killed). When the client is SIGKILLed, the child
sees the client's end of the socket close and SIGKILLs its own process group at once, so a test's
``os.killpg(client.pid, SIGKILL)`` still kills the run without any cleanup.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

_LENGTH = struct.Struct("!Q")
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the other end closed the socket")
        data += chunk
    return bytes(data)


# ---------------------------------------------------------------------------------------------------
# The server: imports Airflow once, forks a child per command
# ---------------------------------------------------------------------------------------------------


#: What ``airflow dags test`` imports after its start (Airflow 3.3; a name another Airflow lacks is left out): none
#: of them reads more than Airflow's configuration at import, which the server shares with its children, or prints
#: anything (``airflow.cli.commands.dag_command`` warns about graphviz: the warning belongs in each run's output).
PRELOADED = (
    "airflow.dag_processing.dagbag", "airflow.dag_processing.collection",
    "airflow.sdk.bases.sensor", "airflow.sdk.bases.decorator", "airflow.providers.common.compat.sdk",
    "airflow.providers.standard.operators.python", "airflow.providers.standard.decorators.python",
    "alembic.runtime.migration", "alembic.script", "alembic.autogenerate", "pygments.lexers.python",
)


def _warm_airflow() -> None:
    """Import what every ``airflow`` command imports, and build the in-process execution API (Airflow 3) with its
    versioned routes, which FastAPI and Cadwyn finish on the first request (one that matches no route, so that no
    endpoint, database session or worker thread runs before the fork)."""
    import importlib

    import airflow.__main__  # noqa: F401 - the CLI's modules and the configuration
    from airflow.cli import cli_parser

    cli_parser.get_parser()
    for name in PRELOADED:
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(name)
    try:
        from airflow.sdk.execution_time.supervisor import in_process_api_server
    except ImportError:  # Airflow 2: tasks run in the command's process, without an execution API
        return
    import asyncio

    import httpx

    app = in_process_api_server().app

    async def first_request() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in-process.invalid") as c:
            await c.get("/execution/prefork-warm-up")

    asyncio.run(first_request())
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if others:  # a thread would be missing in every child, with whatever locks it held
        raise RuntimeError(f"threads left before forking: {others}")


def serve(socket_path: str) -> list[str]:
    """Serve until the parent (the test process) is gone; returns only in a child, with its ``airflow`` arguments."""
    _warm_airflow()
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    print("ready", flush=True)
    children: dict[int, socket.socket] = {}
    while os.getppid() == parent:
        readable, _, _ = select.select([listener], [], [], 0.05)
        if readable:
            conn, _ = listener.accept()
            argv = _fork(conn, listener, children)
            if argv is not None:
                return argv
        _reap(children)
    raise SystemExit(0)


def _fork(conn: socket.socket, listener: socket.socket, children: dict[int, socket.socket]) -> list[str] | None:
    header, fds, _, _ = socket.recv_fds(conn, _LENGTH.size, 3)
    (size,) = _LENGTH.unpack(header)
    request = json.loads(_recv_exactly(conn, size))
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        conn.sendall(_LENGTH.pack(pid))
        children[pid] = conn
        return None
    listener.close()
    for other in children.values():
        other.close()
    os.setsid()  # the child and whatever it starts: one process group, signalled as one
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    threading.Thread(target=_die_with_the_client, args=(conn,), daemon=True, name="prefork-client").start()
    return request["argv"]


def _die_with_the_client(conn: socket.socket) -> None:
    """SIGKILL this child's process group once the client's end closes (the client was killed)."""
    try:
        while conn.recv(1):
            pass
    except OSError:
        pass
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        with contextlib.suppress(OSError):  # the client is gone
            conn.sendall(_LENGTH.pack(os.waitstatus_to_exitcode(status) & 0xFFFFFFFFFFFFFFFF))
        conn.close()


# ---------------------------------------------------------------------------------------------------
# The client: what a test starts, waits for and signals
# ---------------------------------------------------------------------------------------------------


def run(socket_path: str, argv: list[str]) -> int:
    """Have the server fork ``airflow <argv>`` with this process's stdio, directory and environment."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(socket_path)
    request: dict[str, Any] = {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}
    body = json.dumps(request).encode()
    socket.send_fds(conn, [_LENGTH.pack(len(body))], [0, 1, 2])
    conn.sendall(body)
    (child,) = _LENGTH.unpack(_recv_exactly(conn, _LENGTH.size))

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child, signum)

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    (raw,) = _LENGTH.unpack(_recv_exactly(conn, _LENGTH.size))
    code = raw - (1 << 64) if raw >= 1 << 63 else raw
    if code < 0:  # killed by a signal: end the same way
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


# ---------------------------------------------------------------------------------------------------
# The tests' side: one server per import-time environment, started on first use
# ---------------------------------------------------------------------------------------------------

#: ``WFS_PREFORK=0``: every command runs the ``airflow`` script itself (slower; the same results).
ENABLED = os.environ.get("WFS_PREFORK", "1") != "0"
AIRFLOW_BIN = str(Path(sys.executable).with_name("airflow"))
_SERVERS: dict[str, tuple[subprocess.Popen[bytes], str]] = {}


def import_time_environment(env: dict[str, str]) -> dict[str, str]:
    """What Airflow reads while it is imported: its home, its settings and the import path. Connections and
    Variables in the environment are read when they are looked up, so one server serves every value of them."""
    looked_up = ("AIRFLOW_CONN_", "AIRFLOW_VAR_")
    return {key: value for key, value in env.items()
            if key == "PYTHONPATH" or (key.startswith("AIRFLOW") and not key.startswith(looked_up))}


def airflow_command(env: dict[str, str]) -> list[str]:
    """The command line that runs ``airflow`` in ``env``: append the arguments and start it with ``env``."""
    if not ENABLED:
        return [AIRFLOW_BIN]
    key = json.dumps(import_time_environment(env), sort_keys=True)
    server = _SERVERS.get(key)
    if server is None or server[0].poll() is not None:
        server = _SERVERS[key] = _start_server(env)
    return [sys.executable, __file__, "run", server[1]]


def _start_server(env: dict[str, str], timeout: float = 180) -> tuple[subprocess.Popen[bytes], str]:
    socket_path = os.path.join(tempfile.mkdtemp(prefix="wfs-prefork-"), "airflow.sock")  # AF_UNIX: a short path
    log = open(socket_path + ".log", "wb")  # noqa: SIM115 - the server's own output, kept open while it runs
    process = subprocess.Popen([sys.executable, __file__, "serve", socket_path], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=log)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else b"(nothing within the timeout)"
    if line != b"ready\n":  # anything else it prints would be missing from its children's output
        process.kill()
        process.wait()
        raise RuntimeError(f"the prefork server did not start; it printed {line!r}, then: "
                           f"{process.stdout.read()[-2000:]!r}; its log: {Path(log.name).read_text()[-3000:]}")
    return process, socket_path


if __name__ == "__main__":
    if sys.argv[1] == "run":
        sys.exit(run(sys.argv[2], sys.argv[3:]))
    airflow_argv = serve(sys.argv[2])
    # In a child: what the ``airflow`` console script does.
    sys.argv = [os.path.join(os.path.dirname(sys.executable), "airflow"), *airflow_argv]
    from airflow.__main__ import main

    sys.exit(main())
