"""A local stand-in of the Hugging Face Hub's repository API (we can't reach the real Hub from here), written from
the requests huggingface_hub 2.x sends and the answers it reads (``HfApi.create_repo``, ``repo_info``,
``list_repo_tree``, ``create_branch``, ``create_commit``: validate-yaml, preupload, the NDJSON commit) and the
``resolve`` download URL. It keeps dataset repositories in memory as commits of whole trees, checks the bearer
token on every request, answers the Hub's error codes (``X-Error-Code``: RepoNotFound, RevisionNotFound,
EntryNotFound; 409 for an existing repo, 412 when a commit's parentCommit is no longer the branch head) and
records every request (``seen``), bodies included, so a test can check what was (and wasn't) sent.

Not exercised: LFS and Xet blob transfer. The stand-in answers every file ``regular`` at preupload, so content
goes inline in the commit; on the real Hub huggingface_hub's own code uploads large and binary files as LFS/Xet.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from tests.fault_server import free_port

TOKEN = "hf_standin_token_not_a_real_one"
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    trees: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> path -> content
    messages: dict[str, str] = field(default_factory=dict)  # commit sha -> summary

    def commit(self, branch: str, tree: dict[str, bytes], summary: str) -> str:
        sha = hashlib.sha1(json.dumps([branch, sorted(tree), len(self.trees), summary]).encode()).hexdigest()
        self.trees[sha], self.branches[branch], self.messages[sha] = tree, sha, summary
        return sha


@dataclass
class Hub:
    url: str
    repos: dict[str, Repo] = field(default_factory=dict)
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)  # (method, path, body)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.trees[repo.branches[revision]]


def _blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: Hub
    lock: threading.Lock

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None):
        data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str | None, message: str) -> None:
        self._send(status, {"error": message}, {"X-Error-Code": code} if code else None)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlparse(self.path).path
        with self.lock:
            self.hub.seen.append((self.command, self.path, body))
            if self.headers.get("authorization") != f"Bearer {TOKEN}":
                return self._error(401, None, "Invalid credentials in Authorization header")
            try:
                self._route(path, body)
            except KeyError as exc:
                self._error(404, exc.args[0], f"{exc.args[0]} at {path}")

    do_GET = do_POST = do_HEAD = _handle

    def _route(self, path: str, body: bytes) -> None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if self.command == "POST" and parts == ["api", "repos", "create"]:
            return self._create(json.loads(body))
        if self.command == "POST" and parts == ["api", "validate-yaml"]:
            return self._validate(json.loads(body))
        if parts[:2] == ["api", "datasets"] and len(parts) == 4 and self.command == "GET":  # repo_info at main
            repo_id = "/".join(parts[2:4])
            return self._info(repo_id, self._repo(repo_id), "main")
        if parts[:2] == ["api", "datasets"] and len(parts) >= 6:
            repo_id, action, revision, rest = "/".join(parts[2:4]), parts[4], parts[5], "/".join(parts[6:])
            repo = self._repo(repo_id)
            if action == "revision" and self.command == "GET":
                return self._info(repo_id, repo, revision)
            if action == "tree" and self.command == "GET":
                return self._tree(repo, revision, rest)
            if action == "branch" and self.command == "POST":
                repo.branches[revision] = repo.branches["main"]
                return self._send(200, {})
            if action == "preupload" and self.command == "POST":
                return self._preupload(repo, revision, json.loads(body))
            if action == "commit" and self.command == "POST":
                return self._commit(repo_id, repo, revision, body)
        if parts[:1] == ["datasets"] and len(parts) >= 6 and parts[3] == "resolve":
            repo = self._repo("/".join(parts[1:3]))
            tree = repo.trees[self._head(repo, parts[4])]
            name = "/".join(parts[5:])
            if name not in tree:
                raise KeyError("EntryNotFound")
            return self._send(200, raw=tree[name], headers={"ETag": f'"{_blob_id(tree[name])}"'})
        self._error(404, None, f"no route {self.command} {path}")

    def _repo(self, repo_id: str) -> Repo:
        if repo_id not in self.hub.repos:
            raise KeyError("RepoNotFound")
        return self.hub.repos[repo_id]

    @staticmethod
    def _head(repo: Repo, revision: str) -> str:
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.trees:
            return revision
        raise KeyError("RevisionNotFound")

    def _create(self, payload: dict[str, Any]) -> None:
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.hub.url}/datasets/{repo_id}"
        if payload.get("type") != "dataset":
            return self._error(400, None, "this stand-in keeps dataset repositories only")
        if repo_id in self.hub.repos:
            return self._error(409, None, "You already created this dataset repo")
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        repo = self.hub.repos[repo_id] = Repo(private=private)
        repo.commit("main", {".gitattributes": GITATTRIBUTES}, "initial commit")
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate(self, payload: dict[str, Any]) -> None:
        content = payload.get("content", "")
        if not content.startswith("---\n"):
            return self._send(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
        try:
            meta = yaml.safe_load(content.split("---\n")[1])
        except yaml.YAMLError as exc:
            return self._send(400, {"errors": [{"message": str(exc)}], "warnings": []})
        bad = [c for c in meta.get("configs", []) if "config_name" not in c or "data_files" not in c]
        if bad:
            return self._send(400, {"errors": [{"message": "configs: each needs config_name and data_files"}]})
        self._send(200, {"errors": [], "warnings": []})

    def _info(self, repo_id: str, repo: Repo, revision: str) -> None:
        sha = self._head(repo, revision)
        siblings = [{"rfilename": p} for p in sorted(repo.trees[sha])]
        self._send(200, {"id": repo_id, "sha": sha, "private": repo.private, "siblings": siblings, "tags": []})

    def _tree(self, repo: Repo, revision: str, prefix: str) -> None:
        tree = repo.trees[self._head(repo, revision)]
        items = [
            {"type": "file", "oid": _blob_id(content), "size": len(content), "path": path}
            for path, content in sorted(tree.items())
            if not prefix or path.startswith(prefix.rstrip("/") + "/")
        ]
        self._send(200, items)

    def _preupload(self, repo: Repo, revision: str, payload: dict[str, Any]) -> None:
        self._head(repo, revision)
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload["files"]]
        self._send(200, {"files": files})

    def _commit(self, repo_id: str, repo: Repo, revision: str, body: bytes) -> None:
        head = self._head(repo, revision)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, head):
            return self._error(412, None, "A commit has happened since. Please refresh and try again.")
        tree = dict(repo.trees[head])
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                tree[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "deletedFile":
                if value["path"] not in tree:
                    raise KeyError("EntryNotFound")
                del tree[value["path"]]
            else:
                return self._error(400, None, f"{line['key']}: not supported by this stand-in")
        sha = repo.commit(revision, tree, header["summary"])
        self._send(200, {"commitUrl": f"{self.hub.url}/datasets/{repo_id}/commit/{sha}", "commitOid": sha})


@contextmanager
def hub_standin() -> Iterator[Hub]:
    """A stand-in Hub on 127.0.0.1 (a free port), stopped on exit."""
    port = free_port()
    hub = Hub(url=f"http://127.0.0.1:{port}")
    handler = type("Handler", (_Handler,), {"hub": hub, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
