"""service: dokuend as a system service. The unit and plist templates rendered (systemd.py,
launchd.py), installed and removed (install.py), and the running daemon's side of the
service manager: sd_notify (notify.py) and which manager runs it (manager.py).

May import: the core only.
"""

__all__ = ["account", "install", "launchd", "manager", "systemd"]
DEPENDS_ON: tuple[str, ...] = ()
