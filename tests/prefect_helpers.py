"""Real Prefect processes for tests: a server, `serve`, a worker, and their cleanup.

Every process is started in its own session (process group) and carries a
marker variable in its environment, so teardown can stop the whole group and
then prove, by reading /proc, that nothing carrying the marker is left. Flow
runs of a served deployment are started by Prefect in sessions of their own,
so the marker sweep (by pid, never by name) is what catches them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

MARKER_VAR = "FINETUNE_TEST_MARKER"
DATABASE_FILE = "prefect.db"  # where Prefect keeps its SQLite database in PREFECT_HOME
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_env(home: Path, marker: str, api_url: str | None = None) -> dict[str, str]:
    """Environment for Prefect and DVC child processes, isolated under `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PATH=os.pathsep.join([str(VENV_BIN), env.get("PATH", "")]),
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",  # nobody looks at it; starts faster
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        PREFECT_CLI_WRAP_LINES="false",
        DO_NOT_TRACK="1",
        **{MARKER_VAR: marker},
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def marked_pids(marker: str) -> list[int]:
    """Pids of live processes whose environment carries `marker`."""
    needle = f"{MARKER_VAR}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def group_alive(pgid: int) -> bool:
    """Whether any process is left in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(process: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop a process started with start_new_session=True, and its whole group."""
    pgid = process.pid  # a session leader's pgid is its pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()
            if process.returncode is not None and not group_alive(pgid):
                return
            time.sleep(0.1)


def kill_marked(marker: str) -> None:
    """Kill what is left of our processes (e.g. a flow run in its own session)."""
    own_group = os.getpgid(0)
    for pid in marked_pids(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            pgid = os.getpgid(pid)
            if pgid != own_group:  # a CLI call run in pytest's own group: never the group
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_group(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start `command` as the leader of a new session, output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen, log: Path
) -> None:
    """Poll `check()` until true; fail with the process's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what}: process exited {process.returncode}\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.25)
    pytest.fail(f"{what}: not ready after {timeout} s\n{log.read_text()}")


@dataclass
class PrefectServer:
    """A running `prefect server start` and the environment its clients need."""

    api_url: str
    home: Path
    marker: str
    env: dict[str, str]
    process: subprocess.Popen

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        """Call the REST API; raise on an error status. A 503 (the server answers so when
        its SQLite database is locked by another writer) is retried, as Prefect's own
        client does."""
        for attempt in range(5):
            response = httpx.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
            if response.status_code != 503:
                break
            time.sleep(0.5 * 2 ** attempt)
        response.raise_for_status()
        return response


def migrated_database(folder: Path) -> Path:
    """An empty Prefect database with every migration applied.

    A server starting on a fresh home spends most of its start migrating an
    empty SQLite file (~6 CPU seconds); copying this one in skips that.
    """
    home = folder / "prefect-home"
    home.mkdir(parents=True)
    marker = uuid.uuid4().hex
    try:
        result = subprocess.run(
            [str(VENV_BIN / "prefect"), "server", "database", "upgrade", "--yes"],
            env=prefect_env(home, marker),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        kill_marked(marker)
    assert result.returncode == 0, result.stdout + result.stderr
    return home / DATABASE_FILE


def fresh_home(home: Path, database: Path | None = None) -> Path:
    """Create an empty PREFECT_HOME, seeded with a copy of `database` if given."""
    home.mkdir(parents=True)
    if database is not None:
        shutil.copy(database, home / DATABASE_FILE)
    return home


@contextlib.contextmanager
def prefect_server(tmp: Path, database: Path | None = None) -> Iterator[PrefectServer]:
    """Start a Prefect server with a fresh PREFECT_HOME; stop it and its group on exit.

    `database`: a migrated_database() to start from (an empty one, faster).
    """
    home = fresh_home(tmp / "prefect-home", database)
    marker = uuid.uuid4().hex
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = prefect_env(home, marker)
    log = tmp / "server.log"
    process = start_group(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp,
        log,
    )
    try:
        server = PrefectServer(api_url, home, marker, prefect_env(home, marker, api_url), process)
        wait_until(
            lambda: httpx.get(f"{api_url}/health", timeout=2).status_code == 200,
            60,
            "prefect server",
            process,
            log,
        )
        yield server
    finally:
        stop_group(process)
        kill_marked(marker)


@dataclass
class Client:
    """A long-running Prefect client process (serve, worker) and its marker."""

    process: subprocess.Popen
    marker: str


@contextlib.contextmanager
def client_process(
    server: PrefectServer,
    command: list[str],
    cwd: Path,
    log: Path,
    ready: Callable[[], bool],
    env: dict[str, str] | None = None,
) -> Iterator[Client]:
    """Run `command` against `server` until `ready()` is true.

    On exit its group is stopped (before the server: it needs the API to shut
    down cleanly), then any flow run it left behind. It gets a marker of its
    own so that sweep cannot hit the server.
    """
    marker = uuid.uuid4().hex
    env = {**server.env, **(env or {}), MARKER_VAR: marker}
    process = start_group(command, env, cwd, log)
    try:
        wait_until(ready, 60, " ".join(command), process, log)
        yield Client(process, marker)
    finally:
        stop_group(process)
        # Prefect starts each flow run in a session of its own.
        kill_marked(marker)


def serving(server: PrefectServer, repo: Path, log: Path):
    """`python -m flows.finetune serve` in `repo`, once finetune/main is registered."""
    return client_process(
        server,
        [sys.executable, "-m", "flows.finetune", "serve"],
        repo,
        log,
        ready=lambda: httpx.get(
            f"{server.api_url}/deployments/name/finetune/main", timeout=2
        ).is_success,
    )


def worker(server: PrefectServer, pool: str, cwd: Path, log: Path):
    """`prefect worker start --pool <pool>`, once the pool reports it online."""
    return client_process(
        server,
        [str(VENV_BIN / "prefect"), "worker", "start", "--pool", pool, "--name", "test-worker"],
        cwd,
        log,
        ready=lambda: bool(server.api("POST", f"/work_pools/{pool}/workers/filter").json()),
        env={"PREFECT_WORKER_QUERY_SECONDS": "1"},
    )
