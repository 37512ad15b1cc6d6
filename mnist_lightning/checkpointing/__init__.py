"""Checkpoint files: reading and checking those a command is given, finding a run's newest or best one,
and writing them whole."""
