"""The compound-scaling grid search as an Optuna study: resumable, and shared by many workers.

Every grid point is put in the study's queue once, when the study is created, as a WAITING
trial with fixed ``alpha``, ``beta``, ``gamma``. Workers (this process, or the same command on
other machines pointed at the same RDB) claim trials with the storage's atomic
WAITING -> RUNNING transition, so no point is trained twice. Optuna's GridSampler was the
first choice but does not fit: its grid is a full Cartesian product (ours is the slice with
alpha * beta^2 * gamma^2 ~= target), and near the end of a grid it hands the same point to
two workers by design.

A worker records a heartbeat while it trains. A trial whose worker died (``kill -9``, a lost
machine) stops beating; after the grace period any worker marks it failed and Optuna's
``RetryFailedTrialCallback`` puts the same point back in the queue, so it is trained again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import socket
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field

from effnet.core.errors import UsageError, first_line
from effnet.core.figures import pyplot, save_figure
from effnet.models.scaling import flops_ratio
from effnet.search.grid import compound_grid
from effnet.search.latency import measure_latency_ms, mnas_reward
from effnet.search.proxy import Proxy

PARAMS = ("alpha", "beta", "gamma")
OBJECTIVES = ("accuracy", "mnas")


@dataclass(frozen=True)
class GridSearch:
    """What defines a study: workers joining it must agree on all of it."""

    proxy: Proxy
    phi: float = 1.0
    target: float = 2.0
    tolerance: float = 0.1
    grid_step: float = 0.05
    seed: int = 0

    def __post_init__(self):
        # Checked before the study exists: a study created with a bad setting would stay behind.
        for name in ("phi", "target", "tolerance", "grid_step"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value)):
                raise UsageError(f"--{name.replace('_', '-')} must be a finite number, got {value!r}")
        if not 0.0 < self.phi <= 8.0:
            raise UsageError(f"--phi must be in (0, 8] for a grid search (the paper uses 1), got {self.phi}")

    def points(self) -> list[tuple[float, float, float]]:
        return compound_grid(self.target, self.tolerance, self.grid_step)

    def to_dict(self) -> dict:
        return {
            "proxy": self.proxy.to_dict(),
            **{k: getattr(self, k) for k in ("phi", "target", "tolerance", "grid_step", "seed")},
        }


@dataclass
class SearchResult:
    study: str
    trials: list[dict]
    objective: str = "accuracy"
    best: dict | None = None
    pending: int = 0  # grid points not finished (only when this worker did not wait for them)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "study": self.study,
            "objective": self.objective,
            "trials": self.trials,
            "best": self.best,
            "pending": self.pending,
            **self.extra,
        }


def redact(url: str) -> str:
    """A storage URL fit for messages: the password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy can parse: hide anything between ':' and '@'
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


@contextlib.contextmanager
def _schema_lock(url: str):
    """Serialise the creation of a new SQLite database's tables between workers on this machine:
    two workers that start together would otherwise both create Optuna's schema and one fails
    (IntegrityError on alembic_version). Other databases need no file lock (see open_storage),
    nor does one opened read-only (``sqlite:///file:PATH?mode=ro&uri=true``): it creates nothing."""
    path = url.split("///", 1)[1] if url.startswith("sqlite:///") else ""
    path, _, query = path.partition("?")  # driver options (?timeout=, ?mode=ro&uri=true) are not the path
    if path.startswith("file:"):  # an SQLite URI filename
        path = path.removeprefix("file:")
    if not path or path == ":memory:" or "mode=ro" in query.split("&"):
        yield
        return
    # flock on the database file itself: SQLite's own locks are POSIX record locks, which do not
    # interact with flock, and no extra file is left beside the database. A file that cannot be
    # opened (no such directory, no permission) is left for SQLite to report.
    try:
        handle = open(path, "ab")  # noqa: SIM115 (closed below)
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_storage(url: str, heartbeat: int):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if not isinstance(heartbeat, int) or heartbeat < 1:
        raise UsageError(f"--heartbeat must be a whole number of seconds >= 1, got {heartbeat!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats and their retry callback are marked experimental (since Optuna 2.8); they are
    # what makes a killed worker's point run again, so they are used knowingly.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # SQLite serialises writers; concurrent workers wait for the lock instead of failing at 5 s.
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(5):
        try:
            with _schema_lock(url):
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat,
                    grace_period=3 * heartbeat,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
                )
        except Exception as exc:  # sqlalchemy: bad URL, missing driver, unreachable server, not a database
            # A server database whose schema another worker is creating right now: wait and retry.
            racing = any(s in str(exc) for s in ("already exists", "UNIQUE constraint", "Duplicate entry"))
            if attempt < 4 and racing:
                time.sleep(1.0 + attempt)
                continue
            raise UsageError(f"--storage {redact(url)}: {_hide_password(first_line(exc), url)}") from None


def _hide_password(text: str, url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        password = make_url(url).password
    except Exception:
        return text
    return text.replace(str(password), "***") if password else text


@contextlib.contextmanager
def storage_errors(url: str):
    """Storage failures after the database opened (read-only file, lost server) as one line."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        cause = exc.__cause__ or exc
        raise UsageError(f"--storage {redact(url)}: {_hide_password(first_line(cause), url)}") from None


def open_study(spec: GridSearch, storage, name: str, wait_seconds: float = 30.0):
    """Create the study and queue its grid, or join the study another worker created."""
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        _join(study, spec, wait_seconds)
        return study
    study.set_user_attr("spec", spec.to_dict())
    _queue_missing(study, spec)
    return study


def _join(study, spec: GridSearch, wait_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    while "grid_queued" not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)  # the creating worker is still queueing the grid
    saved = study.user_attrs.get("spec")
    mine = json.loads(json.dumps(spec.to_dict()))  # tuples -> lists, as stored
    if saved is not None and saved != mine:
        differ = [k for k in mine if k != "proxy" and saved.get(k) != mine[k]]
        differ += [k for k in mine["proxy"] if saved.get("proxy", {}).get(k) != mine["proxy"][k]]
        raise UsageError(
            f"study {study.study_name!r} was made with other settings ({', '.join(differ)}); "
            "repeat its settings or give another --study"
        )
    if "grid_queued" not in study.user_attrs:
        # Its creator died while queueing (or never got that far): finish the job.
        if saved is None:
            study.set_user_attr("spec", mine)
        _queue_missing(study, spec)


def _queue_missing(study, spec: GridSearch) -> None:
    for alpha, beta, gamma in spec.points():
        study.enqueue_trial({"alpha": alpha, "beta": beta, "gamma": gamma}, skip_if_exists=True)
    study.set_user_attr("grid_queued", True)


class _Heartbeat:
    """Beats for one trial from a thread while the main thread trains."""

    def __init__(self, storage, trial_id: int, interval: int):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001
                # A beat can fail (SQLite's "database is locked" while another worker writes,
                # a dropped connection); the next one retries. A dead thread would get this
                # live trial declared dead and trained twice.
                continue

    def __enter__(self):
        self.storage.record_heartbeat(self.trial_id)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _claim(study, storage) -> int | None:
    """Take one queued trial: WAITING -> RUNNING succeeds for exactly one worker."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    # Listed through the study, whose storage wrapper must know the trials it will write to.
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        # The first heartbeat goes in before the claim: Optuna's fail_stale_trials only sees trials
        # that have one, so a worker killed between the claim and its first beat left a RUNNING
        # trial no one ever failed, and the other workers waited on it forever (a CI run caught
        # it). A beat on a trial that another worker then claims is harmless: that worker beats too.
        try:
            storage.record_heartbeat(trial._trial_id)
        except Exception:  # noqa: BLE001 - two first beats at once (a unique key), a locked SQLite:
            pass  # the trial has a beat from the other worker, or this one's next beat retries
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                return trial._trial_id
        except UpdateFinishedTrialError:
            continue
    return None


def _evaluate_point(study, storage, trial_id: int, spec: GridSearch, heartbeat: int, device: str,
                    engine: str) -> dict:  # fmt: skip
    import optuna
    from optuna.trial import TrialState

    trial = optuna.Trial(study, trial_id)
    high = spec.target + spec.tolerance
    alpha, beta, gamma = (trial.suggest_float(name, 1.0, high) for name in PARAMS)
    proxy = spec.proxy
    shape = proxy.compound(alpha, beta, gamma, spec.phi)
    try:
        with _Heartbeat(storage, trial_id, heartbeat), tempfile.TemporaryDirectory(prefix="effnet-search-") as run:
            result = proxy.train(shape, run, seed=spec.seed)
            config = proxy.config(shape, num_classes=10)
            result.update(proxy.cost(shape), latency_ms=measure_latency_ms(config, device, engine=engine))
    except BaseException:
        # Interrupted or failed: the point goes back in the queue for the next run.
        frozen = study.tell(trial, state=TrialState.FAIL)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, frozen)
        raise
    result["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    _record(study, storage, trial, {**shape.__dict__, **result}, result["val_top1"])
    return {"alpha": alpha, "beta": beta, "gamma": gamma, **result}


def _record(study, storage, trial, attrs: dict, value: float) -> bool:
    """Store a finished point; False if the result had nowhere to go.

    A busy machine can delay this worker's heartbeat past the grace period; another worker
    then declares the trial dead and queues the same point again while this one is still
    training. The finished result then goes into that retry, if no worker has claimed it yet;
    if one has, that worker will store the same point and this result is dropped."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        for key, val in attrs.items():
            trial.set_user_attr(key, val)
        study.tell(trial, value)
        return True
    except UpdateFinishedTrialError:
        pass
    params = storage.get_trial(trial._trial_id).params
    for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if waiting.params != params:
            continue
        try:
            if not storage.set_trial_state_values(waiting._trial_id, state=TrialState.RUNNING):
                continue
        except UpdateFinishedTrialError:
            continue
        return _record(study, storage, optuna.Trial(study, waiting._trial_id), attrs, value)
    warnings.warn(
        f"trial {trial.number} was declared dead while it trained (its heartbeat came late) and "
        "another worker took it again; this worker's result is dropped",
        stacklevel=2,
    )
    return False


def run_grid(
    spec: GridSearch,
    storage_url: str,
    study_name: str,
    *,
    heartbeat: int = 10,
    device: str = "cpu",
    engine: str = "torch",
    wait: bool = True,
    progress=None,
):
    """Work through the study's queue until every grid point is done; returns the study.

    With ``wait`` the worker, once the queue is empty, waits for points other workers are
    still training (or that a dead worker left, until their heartbeat goes stale and they
    are queued again), so that it returns only with the whole grid."""
    storage = open_storage(storage_url, heartbeat)
    with storage_errors(storage_url):
        return _work_through(spec, storage, study_name, heartbeat, (device, engine), wait, progress)


def _work_through(spec: GridSearch, storage, study_name: str, heartbeat: int, where: tuple[str, str], wait: bool,
                  progress):  # fmt: skip
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    study = open_study(spec, storage, study_name)
    total = len(spec.points())
    while True:
        fail_stale_trials(study)
        trial_id = _claim(study, storage)
        if trial_id is None:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running or not wait:
                break
            time.sleep(heartbeat)
            continue
        point = _evaluate_point(study, storage, trial_id, spec, heartbeat, *where)
        if progress:
            done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            progress(point, done, total)
    return study


def summarize(study, objective: str = "accuracy", latency_target_ms: float | None = None) -> SearchResult:
    """Every finished point with its cost, and the best by ``objective``."""
    from optuna.trial import TrialState

    if objective not in OBJECTIVES:
        raise UsageError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if objective == "mnas" and not latency_target_ms:
        raise UsageError("--objective mnas needs --latency-budget-ms: the latency target T of the reward")
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        row = {"number": t.number, **{k: t.params[k] for k in PARAMS}}
        row["flops_ratio"] = round(flops_ratio(row["alpha"], row["beta"], row["gamma"]), 4)
        row.update(t.user_attrs)
        if latency_target_ms:
            row["mnas_reward"] = mnas_reward(row["val_top1"], row["latency_ms"], latency_target_ms)
        rows.append(row)
    rows.sort(key=lambda r: (r["alpha"], r["beta"], r["gamma"]))
    key = "mnas_reward" if objective == "mnas" else "val_top1"
    best = max(rows, key=lambda r: r[key], default=None)
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    return SearchResult(study=study.study_name, trials=rows, objective=objective, best=best, pending=len(queued))


def plot_grid(result: SearchResult, path) -> None:
    """Heatmap of validation top-1 over (beta, alpha); each cell's gamma is written in it
    (the constraint leaves about one gamma per cell; where there are more, the best is shown)."""
    plt = pyplot()
    import numpy as np

    if not result.trials:
        raise UsageError("no finished trials to plot")
    alphas = sorted({r["alpha"] for r in result.trials})
    betas = sorted({r["beta"] for r in result.trials})
    grid = np.full((len(alphas), len(betas)), np.nan)
    label: dict[tuple[int, int], str] = {}
    for r in result.trials:
        i, j = alphas.index(r["alpha"]), betas.index(r["beta"])
        if np.isnan(grid[i, j]) or r["val_top1"] > grid[i, j]:
            grid[i, j] = r["val_top1"]
            label[i, j] = f"γ={r['gamma']:g}\n{100 * r['val_top1']:.1f}"
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(betas), 1.0 + 0.55 * len(alphas)))
    image = ax.imshow(100 * grid, origin="lower", cmap="viridis", aspect="auto")
    for (i, j), text in label.items():
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
    ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set(xlabel="β (width)", ylabel="α (depth)", title=f"Validation top-1 (%), α·β²·γ² ≈ target ({result.study})")
    fig.colorbar(image, ax=ax, label="top-1 (%)")
    fig.tight_layout()
    save_figure(fig, path)
