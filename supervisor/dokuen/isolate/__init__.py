"""isolate: the boundaries between apps, builds and the platform. Which cgroup a process
runs in, the limits on it, and how a whole group is killed at once.

May import: the core only.
"""

__all__ = ["cgroups", "hierarchy", "limits"]
DEPENDS_ON: tuple[str, ...] = ()
