"""Run ``airflow`` commands as forks of a pre-imported Airflow: the DAG-run tests' launcher.

Each ``airflow dags test`` would spend most of its CPU before the DAG's first task: about 1.5 s importing
Airflow and 5 s building the in-process execution API and its versioned routes on its first request (Airflow 3),
against about 1 s for a small DAG's run itself. The tests start some seventy of them on two cores. So, as
Airflow's own executors fork task processes from a pre-imported parent, a *server* per import-time environment
(see :func:`import_time_environment`) imports Airflow once, builds and warms the execution API, and forks one child
per command. A child takes the client's stdin, stdout, stderr, working directory, environment and arguments, is
given what the server printed while importing, and then runs ``airflow``'s own ``main()`` and exits the way the
``airflow`` script does: a separate process that prints and sees what a user's ``airflow dags test`` does.

The *client* (``python prefork.py run <socket> <args>``, standard library only, so it starts in milliseconds) is
what a test starts and signals: it forwards SIGTERM, SIGINT and SIGHUP to the child's process group and exits
with the child's status (by the same signal, when the child was killed). A SIGKILL cannot be forwarded, so a test
kills a run with :func:`signal_run`, which has the client SIGKILL the child's group and die only once the child is
dead, as ``os.killpg(pid, SIGKILL)`` kills the script's. A client killed some other way takes its child with it:
the child SIGKILLs its own process group when the client's end of the socket closes.

What a child shares with its server and a fresh process would not: the modules imported before the fork (Airflow,
its CLI, ``PRELOADED``, none of which reads the environment beyond :func:`import_time_environment` at import), the
string-hash seed, and the warnings already shown while importing (replayed to each child's stderr as text).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

#: One signed 64-bit number: a request's length, a child's pid, an exit status (negative: the killing signal).
_NUMBER = struct.Struct("!q")
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Sent by :func:`signal_run` to a client: SIGKILL the child's group, then die by SIGKILL once it is dead.
KILL_REQUEST = signal.SIGUSR1
READY = b"ready\n"
#: How often the server reaps its children and checks that its parent lives (also the delay of an exit status).
_POLL_S = 0.02


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the other end closed the socket")
        data += chunk
    return bytes(data)


def _recv_number(sock: socket.socket) -> int:
    (value,) = _NUMBER.unpack(_recv_exactly(sock, _NUMBER.size))
    return int(value)


# ---------------------------------------------------------------------------------------------------
# The server: imports Airflow once, forks a child per command
# ---------------------------------------------------------------------------------------------------

#: What ``airflow dags test`` imports after its start on Airflow 3.3 (preloaded on Airflow 3 only): none of them
#: reads more than Airflow's configuration at import, or prints anything (``airflow.cli.commands.dag_command`` warns
#: about graphviz, and on Airflow 2 ``alembic.autogenerate`` logs a plugin: that output belongs in each run's).
PRELOADED = (
    "airflow.dag_processing.dagbag", "airflow.dag_processing.collection",
    "airflow.sdk.bases.sensor", "airflow.sdk.bases.decorator", "airflow.providers.common.compat.sdk",
    "airflow.providers.standard.operators.python", "airflow.providers.standard.decorators.python",
    "alembic.runtime.migration", "alembic.script", "alembic.autogenerate", "pygments.lexers.python",
)


def _warm_airflow() -> None:
    """Import what every ``airflow`` command imports, and on Airflow 3 the modules of a DAG run and the in-process
    execution API with its versioned routes, which FastAPI and Cadwyn finish on the first request (one that matches
    no route, so that no endpoint, database session or worker thread runs before the fork)."""
    import importlib

    import airflow.__main__  # noqa: F401 - the CLI's modules and the configuration
    from airflow.cli import cli_parser

    cli_parser.get_parser()
    try:
        from airflow.sdk.execution_time.supervisor import in_process_api_server
    except ImportError:  # Airflow 2: tasks run in the command's process, without an execution API to warm
        return
    for name in PRELOADED:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as missing_module:  # not in this Airflow; a missing dependency is an error
            if missing_module.name != name:
                raise
    import asyncio

    import httpx

    app = in_process_api_server().app

    async def first_request() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in-process.invalid") as c:
            await c.get("/execution/prefork-warm-up")

    loop = asyncio.new_event_loop()  # never set as the thread's loop: a child starts with none, as a fresh process
    try:
        loop.run_until_complete(first_request())
    finally:
        loop.close()


def serve(socket_path: str, parent: int) -> list[str]:
    """Serve until ``parent`` (the test process) is gone; returns only in a child, with its ``airflow`` arguments."""
    imported_output = _warm_quietly()
    tasks = os.listdir("/proc/self/task")
    if len(tasks) != 1:  # a thread would be missing in every child, with whatever locks it held
        raise RuntimeError(f"{len(tasks)} threads before forking: {[t.name for t in threading.enumerate()]}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(16)
    sys.stdout.buffer.write(READY)
    sys.stdout.flush()
    children: dict[int, socket.socket] = {}
    server = os.getpid()
    try:
        while os.getppid() == parent:
            readable, _, _ = select.select([listener], [], [], _POLL_S)
            if readable:
                conn, _ = listener.accept()
                try:
                    argv = _fork(conn, listener, children, imported_output)
                except (OSError, EOFError, ValueError) as error:  # one bad client: the others go on
                    print(f"prefork: a request failed: {error!r}", file=sys.stderr, flush=True)
                    conn.close()
                    continue
                if argv is not None:
                    return argv
            _reap(children)
    finally:
        if os.getpid() == server:  # the server ends (not a child returning): its socket and directory go too
            shutil.rmtree(os.path.dirname(socket_path), ignore_errors=True)
    raise SystemExit(0)


def _warm_quietly() -> bytes:
    """:func:`_warm_airflow` with what it writes to stderr (warnings, log lines) kept for every child's stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            _warm_airflow()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        return captured.read()


def _fork(conn: socket.socket, listener: socket.socket, children: dict[int, socket.socket],
          imported_output: bytes) -> list[str] | None:
    conn.settimeout(30)  # a client that stalls must not hold up the others
    header, fds, flags, _ = socket.recv_fds(conn, _NUMBER.size, 3)
    if len(fds) != 3 or flags & socket.MSG_CTRUNC or len(header) != _NUMBER.size:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"expected a length and 3 file descriptors, got {len(header)} bytes and {len(fds)}")
    (size,) = _NUMBER.unpack(header)
    request = json.loads(_recv_exactly(conn, size))
    conn.settimeout(None)
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        children[pid] = conn
        return None
    try:
        return _become_the_child(conn, listener, children, fds, request, imported_output)
    except BaseException:  # never back into the server's loop
        traceback.print_exc()
        os._exit(70)


def _become_the_child(conn: socket.socket, listener: socket.socket, children: dict[int, socket.socket],
                      fds: list[int], request: dict[str, Any], imported_output: bytes) -> list[str]:
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
    os.write(2, imported_output)
    conn.sendall(_NUMBER.pack(os.getpid()))  # only now: a signal the client forwards finds the new process group
    threading.Thread(target=_die_with_the_client, args=(conn,), daemon=True, name="prefork-client").start()
    return list(request["argv"])


def _die_with_the_client(conn: socket.socket) -> None:
    """SIGKILL this child's process group once the client's end closes (the client was killed)."""
    with contextlib.suppress(OSError):
        while conn.recv(1):
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
            conn.sendall(_NUMBER.pack(os.waitstatus_to_exitcode(status)))
        conn.close()


# ---------------------------------------------------------------------------------------------------
# The client: what a test starts, waits for and signals
# ---------------------------------------------------------------------------------------------------


def run(socket_path: str, argv: list[str]) -> int:
    """Have the server fork ``airflow <argv>`` with this process's stdio, directory and environment."""
    child: int | None = None
    pending: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if child is None:  # not forked yet: delivered as soon as it is
            pending.append(signum)
        elif signum == KILL_REQUEST:
            _kill_and_die(child)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child, signum)

    for sig in (*_FORWARDED, KILL_REQUEST):
        signal.signal(sig, on_signal)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(socket_path)
    body = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    socket.send_fds(conn, [_NUMBER.pack(len(body))], [0, 1, 2])
    conn.sendall(body)
    child = _recv_number(conn)
    for signum in pending:
        on_signal(signum, None)
    code = _recv_number(conn)
    # The run is over: a signal from now on finds nothing to act on, as one sent to a script that is exiting. Ignored
    # rather than left to Python, which puts back the default action (death by that signal) while it shuts down.
    for sig in (*_FORWARDED, KILL_REQUEST):
        signal.signal(sig, signal.SIG_IGN)
    if code < 0:  # killed by a signal: end the same way
        with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP keep their default anyway
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _kill_and_die(child: int) -> None:
    """SIGKILL the child's process group, wait until the child is dead, then die by SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and running(child):
        time.sleep(0.001)
    os.kill(os.getpid(), signal.SIGKILL)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for the server to reap it is dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


# ---------------------------------------------------------------------------------------------------
# The tests' side: one server per import-time environment, started on first use
# ---------------------------------------------------------------------------------------------------

#: ``WFS_PREFORK=0``: every command runs the ``airflow`` script itself (slower; the same results).
ENABLED = os.environ.get("WFS_PREFORK", "1") != "0"
AIRFLOW_BIN = str(Path(sys.executable).with_name("airflow"))
_SERVERS: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
#: Read by Python or Airflow while they start (besides every ``AIRFLOW*`` and ``PYTHON*`` name).
_READ_AT_START = frozenset({"LANG", "TZ", "NO_COLOR", "FORCE_COLOR", "BUILDING_AIRFLOW_DOCS", "TERM"})


def import_time_environment(env: dict[str, str]) -> dict[str, str]:
    """What Python and Airflow read while they start: Airflow's home and settings (``AIRFLOW*``, ``_AIRFLOW*``), the
    interpreter's ``PYTHON*``, the locale, the time zone and the log colours. Connections and Variables in the
    environment (``AIRFLOW_CONN_*``, ``AIRFLOW_VAR_*``) and everything else are read when they are used, so one
    server serves every value of them."""
    looked_up = ("AIRFLOW_CONN_", "AIRFLOW_VAR_")
    return {key: value for key, value in env.items()
            if (key.startswith(("AIRFLOW", "_AIRFLOW")) and not key.startswith(looked_up))
            or key.startswith(("PYTHON", "LC_")) or key in _READ_AT_START}


def airflow_command(env: dict[str, str]) -> list[str]:
    """The command line that runs ``airflow`` in ``env``: append the arguments and start it with ``env``."""
    if not ENABLED:
        return [AIRFLOW_BIN]
    key = json.dumps({"cwd": os.getcwd(), **import_time_environment(env)}, sort_keys=True)
    server = _SERVERS.get(key)
    if server is None or server[0].poll() is not None:
        server = _SERVERS[key] = _start_server(env)
    return [sys.executable, __file__, "run", server[1]]


def run_airflow(args: list[str], env: dict[str, str], *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``airflow <args>`` in ``env`` to its end: its stdout and stderr together, as text."""
    return subprocess.run([*airflow_command(env), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)


def start_airflow(args: list[str], env: dict[str, str], stdout: Any = subprocess.PIPE) -> subprocess.Popen[Any]:
    """``airflow <args>`` in ``env``, started in a session of its own (stderr into ``stdout``: a file, or a pipe
    read as text): wait for it, or signal it with :func:`signal_run`."""
    return subprocess.Popen([*airflow_command(env), *args], env=env, stdout=stdout, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def signal_run(process: subprocess.Popen[Any], sig: int) -> None:
    """Send ``sig`` to a run started with :func:`airflow_command` as ``os.killpg(process.pid, sig)`` sends it to the
    ``airflow`` script's process group (``start_new_session=True``); after a SIGKILL, ``process.wait()`` returns
    once the run is dead.

    A client that has not yet set its handlers (it is starting) is given the signal as soon as it has; one that has
    the run's status already and is exiting with it ignores them, so the signal has nothing left to act on."""
    if not ENABLED:
        os.killpg(process.pid, sig)
        return
    sent = KILL_REQUEST if sig == signal.SIGKILL else sig
    deadline = time.monotonic() + 60
    # Until the client catches it: one that ignores it is either starting (with an inherited SIG_IGN) or has the
    # run's status and is exiting; either way, soon it catches it or it is gone.
    while process.poll() is None:
        if _catches(process.pid, sent):
            os.kill(process.pid, sent)
            return
        if time.monotonic() > deadline:  # a client stuck before its handlers: end it as the signal would
            os.killpg(process.pid, sig)
            return
        time.sleep(0.001)


def _catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (its ``SigCgt`` mask; a process gone catches nothing)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    caught = next((line.split(":", 1)[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) & (1 << (sig - 1)))


def _start_server(env: dict[str, str], timeout: float = 180) -> tuple[subprocess.Popen[bytes], str]:
    socket_path = os.path.join(tempfile.mkdtemp(prefix="wfs-prefork-"), "airflow.sock")  # AF_UNIX: a short path
    log_path = socket_path + ".log"
    with open(log_path, "wb") as log:  # the server's own stderr (its children's is their client's)
        process = subprocess.Popen([sys.executable, __file__, "serve", socket_path, str(os.getpid())], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else b"(nothing within the timeout)"
    if line != READY:  # anything else it prints would be missing from its children's output
        process.kill()
        process.wait()
        raise RuntimeError(f"the prefork server did not start; it printed {line!r}, then: "
                           f"{process.stdout.read()[-2000:]!r}; its log ({log_path}): "
                           f"{Path(log_path).read_text(errors='replace')[-3000:]}")
    return process, socket_path


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"] and len(sys.argv) >= 3:
        sys.exit(run(sys.argv[2], sys.argv[3:]))
    if sys.argv[1:2] != ["serve"] or len(sys.argv) != 4:
        sys.exit(f"usage: {sys.argv[0]} run <socket> <airflow arguments> | serve <socket> <parent pid>")
    sys.path[0] = os.path.dirname(AIRFLOW_BIN)  # as the ``airflow`` script's: not this file's folder
    airflow_argv = serve(sys.argv[2], int(sys.argv[3]))
    # In a child: what the ``airflow`` console script does.
    sys.argv = [AIRFLOW_BIN, *airflow_argv]
    from airflow.__main__ import main

    sys.exit(main())
