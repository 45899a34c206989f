"""``search()``: the whole of ``effnet search`` as one call: the grid study (or given coefficients)
and, with a latency budget, the largest phi that fits it. The CLI only parses and prints."""

from __future__ import annotations

from collections.abc import Callable

from effnet.core.errors import UsageError
from effnet.search.latency import fit_phi
from effnet.search.proxy import Proxy
from effnet.search.study import GridSearch, SearchResult, plot_grid, run_grid, summarize


def search(
    proxy: Proxy,
    *,
    coefficients: tuple[float, float, float] | None = None,
    phi: float = 1.0,
    target: float = 2.0,
    tolerance: float = 0.1,
    grid_step: float = 0.05,
    seed: int = 0,
    storage: str = "sqlite:///search.db",
    study: str = "effnet-search",
    heartbeat: int = 10,
    wait: bool = True,
    objective: str = "accuracy",
    latency_budget_ms: float | None = None,
    device: str = "cpu",
    engine: str = "torch",
    plot: str | None = None,
    progress: Callable | None = None,
    budget_progress: Callable | None = None,
) -> tuple[dict, SearchResult | None]:
    """The search's report (``trials``, ``best``, ``pending`` from the grid; ``latency_budget``
    with a budget) and the grid's result (None when ``coefficients`` are given instead)."""
    if objective == "mnas" and latency_budget_ms is None:
        raise UsageError("--objective mnas needs --latency-budget-ms: the latency target T of the reward")
    out: dict = {}
    result = None
    if coefficients is not None:
        if objective == "mnas":
            raise UsageError("--objective ranks grid points; with --alpha/--beta/--gamma there is nothing to rank")
    else:
        spec = GridSearch(proxy, phi=phi, target=target, tolerance=tolerance, grid_step=grid_step, seed=seed)
        found = run_grid(spec, storage, study, heartbeat=heartbeat, engine=engine, device=device, wait=wait,
                         progress=progress)  # fmt: skip
        result = summarize(found, objective, latency_budget_ms)
        if plot and result.trials:
            plot_grid(result, plot)
        out = result.to_dict()
        if result.best is None:
            raise UsageError(f"study {study}: no finished grid point yet ({result.pending} pending)")
        coefficients = tuple(result.best[k] for k in ("alpha", "beta", "gamma"))
    if latency_budget_ms is not None:
        out["latency_budget"] = fit_phi(proxy, *coefficients, latency_budget_ms, device=device, engine=engine,
                                        progress=budget_progress)  # fmt: skip
    return out, result
