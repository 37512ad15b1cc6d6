"""What the tests share besides fixtures: tiny IDX files, the command line in-process and as a subprocess,
the server subprocess, and small modules a test's subprocess imports (``own_net``, ``pause_at_step``)."""
