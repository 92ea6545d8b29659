"""Serve the current directory on 127.0.0.1:$PORT: the static buildpack's web process.

The standard library's http.server with two refusals: no path segment starting with a dot
(so .env, .git and .profile.d stay private) and no directory listings (a directory without
an index.html is a 404). Copied into the app as .static-server.py by bin/compile.
"""

# Runs with whatever python3 the machine has (macOS ships 3.9): annotations stay unevaluated.
from __future__ import annotations

import http.server
import io
import os
import sys
from typing import BinaryIO


class StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Files only: dotfiles and directory listings answer 404."""

    def send_head(self) -> io.BytesIO | BinaryIO | None:
        # The file the request maps to, as http.server itself finds it: parsing the URL here
        # instead would read "//.env" as a host name on Pythons before 3.11.1.
        relative = os.path.relpath(self.translate_path(self.path), self.directory)
        if relative != "." and any(part.startswith(".") for part in relative.split(os.sep)):
            self.send_error(http.HTTPStatus.NOT_FOUND)
            return None
        return super().send_head()

    def list_directory(self, path: str | os.PathLike[str]) -> io.BytesIO | None:
        self.send_error(http.HTTPStatus.NOT_FOUND)
        return None


def main() -> None:
    """Serve until killed; the port comes from $PORT."""
    port = int(os.environ["PORT"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), StaticHandler)
    print(f"serving {os.getcwd()} on http://127.0.0.1:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
