"""The error hierarchy. Messages name the thing and the fix; one place maps them to exit codes."""


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
