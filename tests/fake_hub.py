"""A local stand-in for the Hugging Face Hub's HTTP API: exactly the endpoints huggingface_hub 2.x
calls to create a repo, upload a folder (validate-yaml, preupload, NDJSON commit with base64
files) and download a file (HEAD and GET on /<repo>/resolve/<revision>/<path>). Every file is
"regular" (inline in the commit), so no LFS or Xet transfer is involved. Writes need the token
the fake was made with; reads of a missing repo or file answer 404 with the Hub's error codes.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class FakeHub:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, dict[str, bytes]] = {}  # repo id -> path -> content
        self.commits: dict[str, str] = {}  # repo id -> last commit sha
        self.requests: list[tuple[str, str]] = []  # (method, path), for tests to check what was called


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet test output
            pass

        def reply(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def json(self, status: int, data, headers: dict | None = None):
            self.reply(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

        def authorised(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {hub.token}":
                return True
            self.json(401, {"error": "Invalid credentials in Authorization header"})
            return False

        def body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_POST(self):
            path = unquote(urlsplit(self.path).path)
            hub.requests.append(("POST", path))
            data = self.body()
            if path == "/api/validate-yaml":
                return self.json(200, {"errors": [], "warnings": []})
            if not self.authorised():
                return
            if path == "/api/repos/create":
                payload = json.loads(data)
                repo = f"{payload['organization']}/{payload['name']}"
                if repo in hub.repos:
                    return self.json(409, {"error": "You already created this model repo", "url": f"/{repo}"})
                hub.repos[repo] = {}
                return self.json(200, {"url": f"http://{self.headers['Host']}/{repo}", "name": repo})
            for kind in ("preupload", "commit"):
                marker = f"/{kind}/"
                if path.startswith("/api/models/") and marker in path:
                    repo = path[len("/api/models/"):path.index(marker)]
                    if repo not in hub.repos:
                        return self.json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    return getattr(self, kind)(repo, data)
            self.json(404, {"error": f"no such endpoint {path}"})

        def preupload(self, repo: str, data: bytes):
            files = json.loads(data)["files"]
            self.json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                      for f in files]})

        def commit(self, repo: str, data: bytes):
            for line in data.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    hub.repos[repo][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            sha = hashlib.sha1(data).hexdigest()
            hub.commits[repo] = sha
            self.json(200, {"commitUrl": f"http://{self.headers['Host']}/{repo}/commit/{sha}", "commitOid": sha})

        def resolve(self, head: bool):
            path = unquote(urlsplit(self.path).path).lstrip("/")
            hub.requests.append(("HEAD" if head else "GET", "/" + path))
            if "/resolve/" not in path:
                return self.json(404, {"error": "not found"})
            repo, rest = path.split("/resolve/", 1)
            name = rest.split("/", 1)[1]
            if repo not in hub.repos:
                return self.reply(404, b"", {"X-Error-Code": "RepoNotFound"}, head)
            if name not in hub.repos[repo]:
                return self.reply(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
            content = hub.repos[repo][name]
            self.reply(200, content, {"X-Repo-Commit": hub.commits[repo],
                                      "ETag": f'"{hashlib.sha256(content).hexdigest()}"'}, head)

        def do_HEAD(self):
            self.resolve(head=True)

        def do_GET(self):
            self.resolve(head=False)

    return Handler


@contextmanager
def serve_fake_hub(token: str = "hf_test_write_token"):
    """Yields (endpoint URL, FakeHub); the server stops on exit."""
    hub = FakeHub(token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
