"""The one exception type a user of the toolkit can hit, and what to say about a failed file operation."""

import errno
import stat
from pathlib import Path


class DCGANError(Exception):
    """A problem the user can fix: the message names the file or value and what to do.

    The CLI prints it on one line, without a traceback, and exits non-zero.
    """


class TrainingInterrupted(DCGANError):
    """SIGINT or SIGTERM arrived; a checkpoint at the current step was written first (exit code 130)."""


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


def check_regular_file(path: str | Path, what: str) -> Path:
    """`path` as a Path if it is a regular file; a FIFO or a device would block or never end."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise DCGANError(f"cannot read {what} {path}: {describe_os_error(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, socket or device)"
        raise DCGANError(f"{what} {path} is {kind}: give a regular file")
    return path
