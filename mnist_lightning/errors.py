"""The exception the command line reports as a plain message instead of a traceback, and helpers for it."""


class UserError(Exception):
    """A problem with what the user asked for or provided (files, paths, settings).

    The message says what was wrong and how to fix it; the CLI prints it without a traceback and exits
    with status 2.
    """


def yaml_problem(err: BaseException) -> str:
    """Where and what a YAML syntax error is: ``at line 3, column 18: expected ',' or '}', but got ':'``."""
    where = getattr(err, "problem_mark", None)
    line = f"at line {where.line + 1}, column {where.column + 1}: " if where is not None else ""
    return line + (getattr(err, "problem", None) or first_line(err))


def first_line(err: BaseException) -> str:
    """The first line of an exception's message ("" when it has none), to quote inside a UserError."""
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
