"""The one exception type a user of the toolkit can hit."""


class DCGANError(Exception):
    """A problem the user can fix: the message names the file or value and what to do.

    The CLI prints it on one line, without a traceback, and exits non-zero.
    """
