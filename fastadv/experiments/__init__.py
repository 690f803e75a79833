"""Experiments over many runs: the grid runner and the reports (which read run directories only)."""
