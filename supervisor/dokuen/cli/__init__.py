"""cli: the command-line edges, ``dokuend`` (starts the daemon) and ``dokuenctl`` (talks to it
over the control socket, and is the ssh forced command) and ``githook`` (the pre-receive hook,
light to start).

May import: the core, and the pure parsers of deploy (pushes), ssh (forced commands),
backup (cron schedules), service (installing the unit) and export (its renderers).
Nothing imports cli.
"""

__all__ = ["dokuenctl", "dokuend", "githook"]
DEPENDS_ON: tuple[str, ...] = ("backup", "deploy", "export", "service", "ssh")
