"""The one exception type for bad input a person can fix (a missing file, an unknown task, a column that is
not there, a label outside the task's set). The command line prints its message as one line with the
usage and exits with status 2, as argparse does for a bad flag; anything else is a bug and keeps its traceback."""


class UsageError(ValueError):
    """Bad user input. The message names the problem and what to do about it, in one line.

    A `ValueError`, so code (and tests) that catch ValueError keep working."""
