"""The search's shared study on a real PostgreSQL server (Debian's `postgresql`, which make test
installs): a server started for the test in a temporary folder, one worker killed with kill -9 in
the middle of a point, then two workers that resume the study together and complete it with
every grid point trained exactly once more than the killed one."""

import glob
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from effnet.search.grid import compound_grid
from tests.conftest import free_port, import_required, require_component
from tests.unit.search.test_search import GRID, PROXY, completed_points, effnet_cmd, kill_mid_point

WHY = "make test installs Debian's postgresql (apt-get install postgresql)"


def postgres_bin() -> Path | None:
    """The newest installed server's binaries (/usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def as_server_user(user: str | None):
    """initdb and the server refuse to run as root: as root, run them as ``user``."""
    return ["runuser", "-u", user, "--"] if user else []


@pytest.fixture(scope="module")
def postgres_url():
    import_required("psycopg", "the dev extra installs psycopg[binary], the driver of postgresql:// URLs")
    bindir = postgres_bin()
    require_component("PostgreSQL", bindir is not None, WHY)
    user = None
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
        require_component("a non-root user for PostgreSQL", user is not None, "neither postgres nor nobody exists")
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as `user`.
    root = Path(tempfile.mkdtemp(prefix="effnet-pg-"))
    if user:
        shutil.chown(root, user)
    data, port, prefix = root / "data", free_port(), as_server_user(user)
    subprocess.run([*prefix, bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"],
                   check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    subprocess.run([*prefix, bindir / "pg_ctl", "-D", data, "-o", options, "-l", root / "server.log", "-w", "-t", "60",
                    "start"], check=True, capture_output=True)  # fmt: skip
    try:
        subprocess.run([bindir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "effnet"],
                       check=True, capture_output=True)  # fmt: skip
        yield f"postgresql://postgres@127.0.0.1:{port}/effnet"
    finally:
        subprocess.run([*prefix, bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def pg_trials(storage, study="effnet-search"):
    """The study's trials through one storage (one connection pool): a new storage per poll would
    open connections until the server refuses more."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.mark.slow
def test_two_workers_resume_a_postgresql_study_after_kill_9(postgres_url):
    import optuna
    import sqlalchemy

    url = postgres_url
    storage = optuna.storages.RDBStorage(url)
    with storage.engine.connect() as connection:  # a real server answers
        assert "PostgreSQL" in connection.execute(sqlalchemy.text("select version()")).scalar()
    cmd = effnet_cmd("search", *PROXY, *GRID, "--storage", url, "--heartbeat", "1", "--json")
    points = compound_grid(2.0, 0.6, 0.5)

    # One worker, killed with kill -9 while it trains a point (the only RUNNING trial is its own).
    before = kill_mid_point(cmd, lambda: pg_trials(storage), timeout=120)
    assert before is not None, "the search finished before it could be killed mid-point"
    done_before = {t.number for t in before if t.state.name == "COMPLETE"}
    killed = next(t for t in before if t.state.name == "RUNNING")

    # Two workers resume the study on the same server and finish it together.
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=180) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [e[-2000:] for _, e in outputs]
    after = pg_trials(storage)
    assert completed_points(after) == Counter(points)  # every point once, none twice
    assert len(after) == len(points) + 1  # exactly one more trial than points: the killed one's retry
    assert done_before <= {t.number for t in after if t.state.name == "COMPLETE"}  # not retrained
    assert next(t for t in after if t.number == killed.number).state.name == "FAIL"  # went stale...
    retried = [t for t in after if t.state.name == "COMPLETE" and t.params == killed.params]
    assert len(retried) == 1 and retried[0].number > killed.number  # ...and was trained again, once
    resumed = {t.user_attrs["worker"] for t in after if t.state.name == "COMPLETE" and t.number not in done_before}
    assert len(resumed) == 2  # both resuming workers trained points
    storage.engine.dispose()
