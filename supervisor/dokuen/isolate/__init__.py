"""isolate: the security boundaries between apps and the platform, as code to point at.
Opening app-controlled paths without following links (paths), and proving that the
listener on a process's PORT is that process's own (listeners).

May import: the core only.
"""

__all__ = ["listeners", "paths"]
DEPENDS_ON: tuple[str, ...] = ()
