"""apps: one app as a whole. Its task group of process slots, deploys and rollbacks that
switch releases without downtime, the app options, and the requests on apps, processes,
config, releases, domains, logs and maintenance mode.

May import: the core, isolate, supervise, proxy and deploy.
"""

__all__ = [
    "adoption",
    "app",
    "claims",
    "maintenance",
    "options",
    "releasing",
    "requests",
    "resources",
    "runtime",
]
DEPENDS_ON: tuple[str, ...] = ("deploy", "isolate", "proxy", "supervise")
