"""The demo's web process: one page that says who served it."""

import html
import http.server
import os

PAGE = """<!doctype html>
<title>{greeting}</title>
<h1>{greeting}</h1>
<p>Served by <b>{app}</b> process <b>{dyno}</b> on port {port}.</p>
<p>Change the greeting: <code>dokuenctl config:set {app} GREETING='Hi there'</code></p>
"""


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGE.format(
            greeting=html.escape(os.environ.get("GREETING", "Hello")),
            app=os.environ["APP"],
            dyno=os.environ["DYNO"],
            port=os.environ["PORT"],
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.address_string()} {format % args}", flush=True)


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print(f"listening on http://127.0.0.1:{port}/", flush=True)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Page).serve_forever()
