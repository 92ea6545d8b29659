"""The error hierarchy. Messages name the thing and the fix; one place maps them to exit codes.

``explain`` turns any exception (a task group's ExceptionGroup, a failed system call) into
the one line a person reads."""

import errno


class DokuenError(Exception):
    """An action failed for a reason the user can act on. dokuenctl exits 1 with the message."""


class InvalidName(DokuenError):
    """An app name, process type, config key or domain that does not match its grammar."""


class ProcfileError(DokuenError):
    """A Procfile that cannot be parsed; the message names the file and the line."""


class NotFound(DokuenError):
    """A named app, process or release that does not exist."""


class Conflict(DokuenError):
    """The request collides with existing state (an app that already exists, ...)."""


class InvalidKey(DokuenError):
    """An ssh key file that does not hold exactly one public key."""


class Refused(DokuenError):
    """A request its caller may not make: an ssh key asking for something beyond its forced
    command, a push that would delete the deploy branch."""


class SettingsError(DokuenError):
    """A daemon setting with a bad value or an unknown key."""


class DaemonUnavailable(DokuenError):
    """dokuenctl could not reach dokuend on its control socket."""


class ProtocolError(DokuenError):
    """A control-socket message that is not valid JSON or names an unknown command."""


class ServiceError(DokuenError):
    """Installing or removing the system service failed, or a value cannot go into it."""


class UnsafeFile(DokuenError):
    """A file an app or a build controls that dokuend refuses to read: a symbolic link,
    something other than a regular file, or too large. The message names it and the fix."""


class AlreadyRunning(DokuenError):
    """Another dokuend holds the lock of this home."""


# What a person can do about a failed system call, by errno.
_OS_FIXES = {
    errno.ENOSPC: "the disk is full: free space on it, then try again",
    errno.EDQUOT: "the disk quota is used up: free space or raise the quota, then try again",
    errno.EMFILE: "dokuend has too many open files: close idle connections, or raise "
    "LimitNOFILE / ulimit -n",
    errno.ENFILE: "the system has too many open files: raise fs.file-max or stop something",
    errno.EIO: "an input/output error: check the disk (dmesg)",
    errno.EROFS: "the file system is read-only: remount it read-write",
    errno.EACCES: "permission denied: check the owner and mode of the file",
    errno.EPERM: "not permitted: check the owner and mode of the file",
    errno.ENOENT: "it is missing: was it deleted by hand?",
    errno.E2BIG: "the app's environment is too big to start a process with: remove config "
    "vars (dokuenctl config:unset) or shorten its .env",
}


def leaf(exc: BaseException) -> BaseException:
    """The one exception to tell a person about, out of a (nested) ExceptionGroup that a task
    group raised: its first DokuenError, else its first OSError, else its first exception."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = list(_leaves(exc))
    for kind in (DokuenError, OSError):
        for found in leaves:
            if isinstance(found, kind):
                return found
    return leaves[0] if leaves else exc


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for inner in group.exceptions:
        found.extend(_leaves(inner) if isinstance(inner, BaseExceptionGroup) else [inner])
    return found


def explain(exc: BaseException) -> str:
    """One line for a person: what failed and what to do. A DokuenError says it itself; a
    failed system call names its file, the cause and the fix; anything else is a bug."""
    exc = leaf(exc)
    if isinstance(exc, DokuenError):
        return str(exc)
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        fix = _OS_FIXES.get(exc.errno or 0)
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{what}" + (f" ({fix})" if fix else "")
    text = " ".join(str(exc).split()) or "no message"
    if isinstance(exc, ImportError):  # a library imported on first use, gone or broken
        return (
            f"dokuen's installation is broken ({text}): reinstall dokuen with its "
            "dependencies, then dokuenctl daemon:reload"
        )
    return (
        f"internal error: {type(exc).__name__}: {text} (a bug in dokuen; its traceback is in "
        "dokuend's log with -v, please report it)"
    )
