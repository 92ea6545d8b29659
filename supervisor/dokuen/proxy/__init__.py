"""proxy: nginx in front of every app. nginx.py renders the config (pure), driver.py writes
it, checks it with ``nginx -t`` and runs the managed master or reloads the system nginx;
router.py (pure) and accesslog.py make the router lines of nginx's access log.

May import: the core and supervise (the managed master is a supervised child).
"""

__all__ = ["driver", "nginx"]
DEPENDS_ON: tuple[str, ...] = ("supervise",)
