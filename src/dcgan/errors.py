"""The one exception type a user of the toolkit can hit, and what to say about a failed file operation."""

import errno


class DCGANError(Exception):
    """A problem the user can fix: the message names the file or value and what to do.

    The CLI prints it on one line, without a traceback, and exits non-zero.
    """


_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is exhausted: free some space",
    errno.EACCES: "permission denied: choose a folder you may write to",
    errno.EPERM: "operation not permitted: choose a folder you may write to",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.EEXIST: "a file of that name already exists",
}


def describe_os_error(e: OSError) -> str:
    """The real cause of a failed file operation and what to do, in a few words."""
    return _ADVICE.get(e.errno, e.strerror or str(e)) + (f" ({e.strerror})" if e.errno in _ADVICE else "")
