"""data: PostgreSQL for the apps. The managed cluster (and the system account it runs as) or
an external server, each app's database, role and socket directory, and the ``pg:*``
requests.

May import: the core, isolate (who may pass a directory), supervise (the cluster is a
supervised child) and apps (the requests act on an app).
"""

__all__ = ["cluster", "database", "postgres", "requests"]
DEPENDS_ON: tuple[str, ...] = ("apps", "isolate", "supervise")
