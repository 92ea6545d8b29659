"""deploy: from source to release. Buildpacks, the isolated build, slugs, immutable
releases, the tools builds are given (bundled buildpacks, uv), each app's git repository
and what a push does.

May import: the core, isolate (what a build wrote is read through it, the uids builds run
as, the owner of a release, a build's cgroup) and supervise (builds are supervised
subprocesses).
"""

__all__ = ["build", "buildpack", "receive", "releases", "repo", "slug", "tools"]
DEPENDS_ON: tuple[str, ...] = ("isolate", "supervise")
