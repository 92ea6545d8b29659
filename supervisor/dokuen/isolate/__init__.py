"""isolate: the security boundaries between apps, builds and the platform, as code to point
at. Who runs as which user: the uid block of a Dokuen home and each app's runtime and build
uids (identity, isolation); the owners and modes of the tree under DOKUEN_HOME (modes);
opening app-controlled paths without following links (paths); proving that the listener on
a process's PORT is that process's own (listeners); which cgroup a process runs in, its
limits, and how a whole group is killed at once (cgroups, hierarchy, limits); an app's
environment kept from the root steps that start its processes (carried).

May import: the core only.
"""

__all__ = [
    "carried",
    "cgroups",
    "hierarchy",
    "identity",
    "isolation",
    "limits",
    "listeners",
    "modes",
    "paths",
]
DEPENDS_ON: tuple[str, ...] = ()
