"""A tiny app for the end-to-end tests: answers every GET with its environment as JSON,
and the X-Request-Id headers the request came with as ``request_ids`` (a list)."""

import http.server
import json
import os


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ids = self.headers.get_all("X-Request-Id") or []
        body = json.dumps({**os.environ, "request_ids": ids}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.command} {self.path}", flush=True)


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print(f"listening on {port}", flush=True)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
