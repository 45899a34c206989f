"""Searching the scaling coefficients: the alpha/beta/gamma grid, latency budgets, the scaling study."""
