"""backup: database dumps and repository bundles in a backup target (a directory or S3),
their verification by restore, schedules, and the ``backups*`` requests.

May import: the core, supervise, deploy (repositories), data (databases) and apps.
"""

__all__ = [
    "bundle",
    "databases",
    "dumps",
    "renaming",
    "requests",
    "schedule",
    "scheduler",
    "storage",
    "targets",
]
DEPENDS_ON: tuple[str, ...] = ("apps", "data", "deploy", "supervise")
