"""The project's own commands, one subpackage or module each: ``sweep``, ``runs``, ``export``, ``serve``."""
