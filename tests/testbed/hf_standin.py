"""A loopback stand-in for Hugging Face's file endpoint, for the model_cache tests.

It answers `/<org>/<repo>/resolve/<revision>/<file>` as huggingface.co does for an LFS
file: HEAD and GET get a 302 to a CDN-like URL on another host name (`localhost` where
the request came to 127.0.0.1, so a token is dropped on the way, as on the real CDN)
carrying X-Repo-Commit (the commit the revision resolved to), X-Linked-Etag (the file's
sha256, quoted), X-Linked-Size and ETag; the CDN path serves the bytes with single-range
requests (206) for resumed downloads. A revision is a branch name (refs/<name> holds its
commit) or a 40-hex commit. One JSON line per request goes to --log (method, path,
range, auth, status, bytes). The file serving, the range requests and the log are the
model mirror's (mirror_server.py, imported from beside this file: on test hosts the
Molecule scenarios copy it there too).

Files live on disk as DIR/<org>/<repo>/commits/<commit>/<file>; `publish` adds one:

    python3 hf_standin.py publish --directory DIR --repo Qwen/Qwen3-8B-GGUF \\
        --file Qwen3-8B-Q4_K_M.gguf --src tiny.gguf [--ref main]      # prints the commit
    python3 hf_standin.py serve --directory DIR --port 18090 [--log FILE]

Standard library only: the Molecule scenario runs it inside its test hosts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import typing
import urllib.parse
from http import HTTPStatus

import mirror_server  # beside it: here a link into tests/molecule/model_cache/files

COMMIT = re.compile(r"[0-9a-f]{40}")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def publish(directory: str, repo: str, file: str, src: str, ref: str = "main") -> str:
    """Add src as `file` in a new commit of `repo` that `ref` then points to; the commit
    id is derived from the content, so publishing the same bytes gives the same id."""
    base = os.path.join(directory, repo)
    commit = hashlib.sha1(f"{repo}\0{file}\0{sha256_file(src)}".encode()).hexdigest()
    dest = os.path.join(base, "commits", commit, file)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copyfile(src, dest + ".part")
    os.replace(dest + ".part", dest)
    os.makedirs(os.path.join(base, "refs"), exist_ok=True)
    with open(os.path.join(base, "refs", ref + ".part"), "w") as f:
        f.write(commit + "\n")
    os.replace(os.path.join(base, "refs", ref + ".part"), os.path.join(base, "refs", ref))
    return commit


class Handler(mirror_server.MirrorHandler):
    """The mirror's handler (file serving, range requests, the JSON log) under /cdn/,
    with Hugging Face's resolve redirects in front of it."""

    _digests: typing.ClassVar[dict] = {}

    def _digest(self, path: str) -> str:
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = sha256_file(path)
        return self._digests[key]

    def _resolve(self, parts: list[str]) -> tuple[str, str] | None:
        """(commit, file path on disk) for <org>/<repo>/resolve/<revision>/<file...>."""
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        base = os.path.join(self.directory, repo)
        if COMMIT.fullmatch(revision):
            commit = revision
        else:
            try:
                with open(os.path.join(base, "refs", revision)) as f:
                    commit = f.read().strip()
            except OSError:
                return None
        path = os.path.join(base, "commits", commit, name)
        return (commit, path) if os.path.isfile(path) else None

    def translate_path(self, path: str) -> str:
        # /cdn/<org>/<repo>/commits/<commit>/<file> is that file under the directory.
        return super().translate_path(path.removeprefix("/cdn"))

    def _answer(self, body: bool) -> None:
        path = urllib.parse.urlsplit(self.path).path
        parts = [urllib.parse.unquote(p) for p in path.split("/")[1:]]
        if ".." in parts:
            return self._plain(HTTPStatus.BAD_REQUEST)
        if parts and parts[0] == "cdn":
            if not os.path.isfile(os.path.join(self.directory, *parts[1:])):
                return self._plain(HTTPStatus.NOT_FOUND)
            return super().do_GET() if body else super().do_HEAD()
        found = self._resolve(parts)
        if not found:
            return self._plain(HTTPStatus.NOT_FOUND)
        commit, path = found
        host = self.headers.get("Host", "127.0.0.1").split(":")[0]
        port = self.server.server_address[1]
        cdn = "localhost" if host != "localhost" else "127.0.0.1"
        rel = os.path.relpath(path, self.directory)
        self.send_response(HTTPStatus.FOUND)
        self.send_header("Location", f"http://{cdn}:{port}/cdn/{urllib.parse.quote(rel)}")
        self.send_header("X-Repo-Commit", commit)
        self.send_header("X-Linked-Etag", f'"{self._digest(path)}"')
        self.send_header("X-Linked-Size", str(os.path.getsize(path)))
        self.send_header("ETag", f'"{self._digest(path)}"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _plain(self, code) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)


def make_server(directory: str, port: int = 0, log: str | None = None,
                bind: str = "127.0.0.1") -> mirror_server.Server:
    handler = type("StandinHandler", (Handler,), {"_digests": {}})
    return mirror_server.make_server(os.path.abspath(directory), port, log, bind=bind,
                                     handler=handler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish", help="add a file to a repository as a new commit")
    p.add_argument("--directory", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--ref", default="main")
    s = sub.add_parser("serve", help="serve the files on loopback")
    s.add_argument("--directory", required=True)
    s.add_argument("--port", type=int, default=18090)
    s.add_argument("--bind", default="127.0.0.1")
    s.add_argument("--log")
    args = ap.parse_args(argv)
    if args.command == "publish":
        print(publish(args.directory, args.repo, args.file, args.src, args.ref))
        return 0
    make_server(args.directory, args.port, args.log, args.bind).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
