"""What every layer may use: error types, atomic file writes, optional-dependency checks, figures."""
