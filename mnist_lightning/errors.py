"""The one exception type the command line reports as a plain message instead of a traceback."""


class UserError(Exception):
    """A problem with what the user asked for or provided (files, paths, settings).

    The message says what was wrong and how to fix it; the CLI prints it without a traceback and exits
    with status 2.
    """
