"""dokuend as a system service: the unit and plist templates rendered (systemd.py,
launchd.py), installed and removed (install.py), and the running daemon's side of the
service manager: sd_notify (notify.py) and which manager runs it (manager.py)."""
