"""The exception the command line reports as a plain message instead of a traceback, and a helper for it."""


class UserError(Exception):
    """A problem with what the user asked for or provided (files, paths, settings).

    The message says what was wrong and how to fix it; the CLI prints it without a traceback and exits
    with status 2.
    """


def first_line(err: BaseException) -> str:
    """The first line of an exception's message ("" when it has none), to quote inside a UserError."""
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
