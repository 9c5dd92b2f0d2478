"""PostgreSQL crashes and comes back in the middle of a storm (T30): callbacks that meet the outage
get a non-200 answer and their payments are found by the sweep; nothing is half-written.

Never the shared server: a throwaway cluster of our own (initdb into a temporary folder, a free
port), with the shop's and the simulator's gunicorn and the worker running against it
(`manage.py mpesa_storm --fault`). The crash is `pg_ctl stop -m immediate`: no clean shutdown,
recovery from the WAL on restart.
"""

import glob
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.conf import settings

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def free_port() -> int:
    # Never a fixed port: another run of this test (or anything else) may hold it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def as_postgres(command: list[str]) -> list[str]:
    # initdb and the server refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture
def throwaway_cluster():
    if not BINARIES:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        pytest.skip("running as root without runuser: cannot start a PostgreSQL cluster")
    binaries = Path(BINARIES[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="storm-pg-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data)]
    start = [*pg_ctl, "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1", "-l", str(folder / "server.log"),
             "-w", "start"]
    subprocess.run(as_postgres([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
                   check=True, capture_output=True)
    subprocess.run(as_postgres(start), check=True, capture_output=True)
    crash_and_restart = folder / "crash-and-restart.sh"
    crash_and_restart.write_text(
        f"{shlex.join(as_postgres([*pg_ctl, '-m', 'immediate', 'stop']))}\nsleep 3\n{shlex.join(as_postgres(start))}\n")
    try:
        subprocess.run(as_postgres([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                    "storm"]), check=True, capture_output=True)
        yield f"postgres://postgres@127.0.0.1:{port}/storm", f"sh {crash_and_restart}"
    finally:
        subprocess.run(as_postgres([*pg_ctl, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def manage(database_url: str, *arguments: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "DEBUG": "True", "MPESA_ENVIRONMENT": "simulator",
           # A prompt whose push met the outage has no CheckoutRequestID to ask about: given up sooner.
           "MPESA_STK_GIVE_UP_AFTER": "40", "LOG_LEVEL": "ERROR"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run([sys.executable, "manage.py", *arguments], cwd=settings.BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_postgres_crashing_mid_storm_loses_nothing_and_leaves_nothing_half_written(throwaway_cluster):
    database_url, crash = throwaway_cluster
    migrated = manage(database_url, "migrate", "--noinput", timeout=300)
    assert migrated.returncode == 0, migrated.stderr

    storm = manage(database_url, "mpesa_storm", "--callbacks", "200", "--port", "8464", "--fault", crash,
                   "--fault-at", "0.3", timeout=900)

    report = storm.stdout + storm.stderr
    print(report)  # the storm's figures, for `pytest -s`
    assert storm.returncode == 0, report
    assert "fault: running" in report
    refused = int(re.search(r"non-200 answers: ([\d,]+)", report).group(1).replace(",", ""))
    assert refused > 0, "no callback met the outage: the fault came too late or too early\n" + report
    for figure in ("lost", "double-counted", "stuck pending", "answered without a raw row", "invariant violations",
                   "unexpected outcomes"):
        assert f"{figure}: 0" in report, report
    books = manage(database_url, "check_books", timeout=120)
    assert books.returncode == 0, books.stdout + books.stderr
    assert "OK: the books of all shops are right." in books.stdout
