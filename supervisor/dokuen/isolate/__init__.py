"""isolate: the security boundaries between apps, builds and the platform, as code to point
at. Opening app-controlled paths without following links (paths), proving that the listener
on a process's PORT is that process's own (listeners), and which cgroup a process runs in,
its limits, and how a whole group is killed at once (cgroups, hierarchy, limits).

May import: the core only.
"""

__all__ = ["cgroups", "hierarchy", "limits", "listeners", "paths"]
DEPENDS_ON: tuple[str, ...] = ()
