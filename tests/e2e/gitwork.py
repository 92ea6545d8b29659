"""A developer's git work tree for the end-to-end tests: real git, its own clean config."""

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.conftest import write_app


@dataclass
class Work:
    """A work tree at ``path``; ``ssh`` is the GIT_SSH_COMMAND to push over ssh with."""

    path: Path
    ssh: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.path.parent),  # no ~/.gitconfig of the person running the tests
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Dev",
            "GIT_AUTHOR_EMAIL": "dev@example.com",
            "GIT_COMMITTER_NAME": "Dev",
            "GIT_COMMITTER_EMAIL": "dev@example.com",
            **self.extra_env,
        }
        if self.ssh:
            env["GIT_SSH_COMMAND"] = self.ssh
        return env

    @classmethod
    def create(cls, path: Path, procfile: str, ssh: str | None = None) -> "Work":
        """A new repository holding the test app (conftest.write_app) in one commit."""
        write_app(path, procfile)
        work = cls(path, ssh)
        work.git("init", "-q", "-b", "main")
        work.commit("first")
        return work

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def commit(self, message: str, files: dict[str, str] | None = None) -> str:
        """Write ``files``, commit everything, return the commit id."""
        for name, content in (files or {}).items():
            (self.path / name).write_text(content)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").stdout.strip()

    def push(self, remote: str, *refspecs: str) -> subprocess.CompletedProcess[str]:
        """``git push`` (its output, with the remote's lines, is on stderr)."""
        return self.git("push", remote, *refspecs, check=False)

    def start_push(self, remote: str, *refspecs: str) -> "subprocess.Popen[str]":
        return subprocess.Popen(
            ["git", "push", remote, *refspecs],
            cwd=self.path,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def remote_lines(output: str) -> list[str]:
    """What the pusher saw from the remote, without git's ``remote: `` and padding."""
    return [
        line.removeprefix("remote: ").rstrip()
        for line in output.splitlines()
        if line.startswith("remote: ")
    ]
