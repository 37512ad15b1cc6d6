"""``runs``: the runs under a log folder in one table (torch-free)."""
