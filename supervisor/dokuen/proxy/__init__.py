"""proxy: nginx in front of every app. nginx.py renders the config (pure), sitefiles.py
writes the app files (checked with ``nginx -t``, with the nonce of their request ids),
driver.py keeps them current and runs the managed master or reloads the system nginx
(prefixwatch.py tells it when a part of nginx/ went);
router.py (pure) and accesslog.py make the router lines of nginx's access log.

May import: the core and supervise (the managed master is a supervised child).
"""

__all__ = ["driver", "nginx"]
DEPENDS_ON: tuple[str, ...] = ("supervise",)
