#!/usr/bin/python
"""Fetch pinned files into a cache: resumable, verified by sha256, moved into place
atomically. The pure parts (digests, status, resumable download, install) are plain
functions so tests/unit can exercise them against a real HTTP server."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import shutil
import time
import urllib.error
import urllib.parse

try:
    from ansible.module_utils.basic import AnsibleModule
    from ansible.module_utils.urls import open_url
except ImportError:  # tests/unit import the pure parts without Ansible's runtime
    AnsibleModule = None
    open_url = None

DOCUMENTATION = r"""
---
module: model_cache_fetch
short_description: Put sha256-pinned files into a cache folder, resumably and atomically.
description:
  - For each artifact, a file already in place with the pinned size and sha256 is left
    alone (only its mode and owner are corrected). A file with the wrong size or digest
    is removed at once, so nothing that looks valid stays behind.
  - A missing file is downloaded from O(artifacts[].url) to a hidden temporary name
    (C(.NAME.part)) beside it, resuming an earlier partial download with an HTTP Range
    request when the server supports it, or adopted from O(artifacts[].src), a file
    already on the host (a bundle pushed from the controller).
  - The temporary file is moved into place only after its size and sha256 match. On a
    mismatch it is deleted and the module fails naming the file, the expected and the
    actual digest.
  - With O(state=verified) nothing is changed; the result lists what is missing or wrong.
options:
  dir:
    description: The cache folder; artifact paths are relative to it.
    type: path
    required: true
  artifacts:
    description: The files, each a dict with C(path), C(sha256), optional C(size) and
      C(url) or C(src). A Hugging Face file may carry C(hf) (C(endpoint), C(repo),
      C(file), C(revision)); then C(sha256) may be null and is learned from the metadata
      Hugging Face declares at that revision (trust on first use), and a pinned one is
      checked against that metadata before a download. C(pinned_by) names where the
      expected digest comes from, for the error messages.
    type: list
    elements: dict
    required: true
  state:
    description: C(present) fetches what is missing or wrong; C(verified) only reports.
    type: str
    choices: [present, verified]
    default: present
  src_dir:
    description: A folder on the host with the cache's layout (staged bundle files); a
      missing file without C(url) or C(src) is adopted from there and the staged copy
      is moved away.
    type: path
  headers:
    description: HTTP headers for every request.
    type: dict
    default: {}
  huggingface_token:
    description: A Hugging Face token, sent as a Bearer header only with the requests
      for artifacts marked C(huggingface=true).
    type: str
  timeout:
    description: Seconds before a stalled connection is given up.
    type: int
    default: 60
  retries:
    description: Attempts per file on network errors (each resumes the last).
    type: int
    default: 3
  validate_certs:
    description: Check TLS certificates.
    type: bool
    default: true
  file_mode:
    description: Mode of the files in the cache.
    type: raw
    default: "0444"
  dir_mode:
    description: Mode of the folders the module creates.
    type: raw
    default: "0755"
  owner:
    description: Owner of the files (name or uid); unchanged when omitted.
    type: str
  group:
    description: Group of the files (name or gid); unchanged when omitted.
    type: str
author: kokoro-deploy
"""

RETURN = r"""
fetched:
  description: Paths downloaded or adopted in this run.
  type: list
  returned: always
replaced:
  description: Paths whose old file had the wrong size or digest and was removed.
  type: list
  returned: always
resumed:
  description: Paths whose download resumed a partial file, with the offset.
  type: list
  returned: always
needed:
  description: Paths missing or wrong (state=verified), or still missing after errors.
  type: list
  returned: always
learned:
  description: What Hugging Face declared for each C(hf) file this run asked it about
    (path, repo, file, revision, commit, size, sha256), for the controller's lock file.
  type: list
  returned: always
bytes_downloaded:
  description: Bytes received over HTTP in this run.
  type: int
  returned: always
"""


CHUNK = 1 << 20


class FetchError(Exception):
    """A file could not be put in place; the message names the file and the fix."""


REDIRECT_CODES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def redirected(url: str, location: str, headers: dict) -> tuple[str, dict]:
    """Where a redirect from `url` leads, and the headers to send there: the token
    (Authorization) only to the same scheme, host and port it was meant for, and never
    from HTTPS down to plain HTTP."""
    new = urllib.parse.urljoin(url, location)
    here, there = _origin(url), _origin(new)
    if here[0] == "https" and there[0] != "https":
        raise FetchError(f"{url} redirects to {new}, from HTTPS to plain HTTP: refused. Point "
                         "the source at an HTTPS URL that stays on HTTPS.")
    if there != here:
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    return new, headers


def following_redirects(open_once):
    """An opener that follows redirects by `redirected`'s rules, over `open_once`, which
    must raise HTTPError for a redirect (Ansible's open_url with follow_redirects='none')."""

    def opener(url, headers, timeout):
        for _ in range(MAX_REDIRECTS + 1):
            try:
                return open_once(url, headers=headers, timeout=timeout)
            except urllib.error.HTTPError as err:
                location = err.headers.get("Location") if err.headers else None
                if err.code not in REDIRECT_CODES or not location:
                    raise
                err.close()
                url, headers = redirected(url, location, headers)
        raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects")

    return opener


HEX64 = re.compile(r"[0-9a-f]{64}")
HEX40 = re.compile(r"[0-9a-f]{40}")


def resolve_url(hf: dict, revision: str) -> str:
    return f"{hf['endpoint'].rstrip('/')}/{hf['repo']}/resolve/{revision}/{hf['file']}"


def _etag(value: str | None) -> str:
    value = (value or "").strip()
    return value[2:].strip('"') if value.startswith("W/") else value.strip('"')


def hf_metadata(rel: str, hf: dict, *, head, headers: dict, timeout) -> dict:
    """What Hugging Face declares for a file at a revision, read as huggingface_hub's
    get_hf_file_metadata reads it: a HEAD on the resolve URL that follows relative
    redirects (a renamed repository) but not the redirect to the CDN, whose response
    carries X-Repo-Commit (the commit the revision resolved to), X-Linked-Etag (an LFS
    file's sha256, quoted) and X-Linked-Size."""
    url = resolve_url(hf, hf["revision"])
    for _ in range(MAX_REDIRECTS + 1):
        try:
            status, answer = head(url, headers, timeout)
        except (urllib.error.URLError, OSError) as err:
            raise FetchError(
                f"{rel}: could not ask Hugging Face for the file's digest at {url} ({err}). "
                "Check that the host reaches model_cache_huggingface_endpoint (proxy, "
                "mirror), or pin the file's sha256 in manifest.yml or the lock file."
            ) from None
        location = answer.get("Location")
        if status in REDIRECT_CODES and location and not urllib.parse.urlsplit(location).netloc:
            url = urllib.parse.urljoin(url, location)
            continue
        break
    else:
        raise FetchError(f"{rel}: {url}: more than {MAX_REDIRECTS} redirects")
    if status >= 400:
        raise FetchError(
            f"{rel}: Hugging Face answered HTTP {status} for {url}. Check the repository, "
            "file and revision in manifest.yml, the endpoint (model_cache_huggingface_"
            "endpoint) and any token it needs (model_cache_huggingface_token)."
        )
    commit = (answer.get("X-Repo-Commit") or "").strip()
    sha = _etag(answer.get("X-Linked-Etag") or answer.get("ETag")).lower()
    size = answer.get("X-Linked-Size") or answer.get("Content-Length")
    if not HEX40.fullmatch(commit) or not HEX64.fullmatch(sha) or not str(size or "").isdigit():
        raise FetchError(
            f"{rel}: {url} declares no usable commit, LFS sha256 and size (X-Repo-Commit "
            f"{commit or 'missing'}, X-Linked-Etag {sha or 'missing'}, X-Linked-Size "
            f"{size or 'missing'}), so there is nothing to check the download against. Pin "
            "the file's sha256 and a commit in manifest.yml's companions, or point "
            "model_cache_huggingface_endpoint at a Hugging Face mirror that sends them."
        )
    return {"path": rel, "repo": hf["repo"], "file": hf["file"], "revision": hf["revision"],
            "commit": commit, "size": int(size), "sha256": sha}


def sha256_file(path: str, chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_status(path: str, sha256: str, size: int | None) -> tuple[str, str | None]:
    """('ok'|'missing'|'size'|'digest', actual digest if computed). Size is checked
    first: a wrong size needs no hashing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing", None
    if size is not None and st.st_size != size:
        return "size", None
    actual = sha256_file(path)
    return ("ok" if actual == sha256 else "digest"), actual


def part_path(dest: str) -> str:
    """The hidden temporary name beside dest (same filesystem, so the rename is atomic)."""
    head, tail = os.path.split(dest)
    return os.path.join(head, f".{tail}.part")


def _content_range_start(value: str | None) -> int | None:
    # "bytes 1000-1999/2000" -> 1000
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def download(url, part, *, opener, headers=None, timeout=60, expected_size=None):
    """Download url into part, resuming from part's current length when the server
    honours Range. Returns (bytes received, offset resumed from or 0)."""
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    if expected_size is not None and offset > expected_size:
        os.remove(part)  # longer than the pinned file: not a prefix of it
        offset = 0
    if expected_size is not None and offset == expected_size and offset > 0:
        return 0, offset  # complete already; the digest check decides
    req_headers = dict(headers or {})
    if offset:
        req_headers["Range"] = f"bytes={offset}-"
    try:
        resp = opener(url, headers=req_headers, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return 0, offset  # nothing past what we hold; the digest check decides
        raise
    status = getattr(resp, "status", None) or resp.getcode()
    start = _content_range_start(resp.headers.get("Content-Range"))
    if offset and status == 206 and start == offset:
        mode = "ab"
    else:
        mode, offset = "wb", 0  # no Range support (200): start over
    received = 0
    with open(part, mode) as f:
        while True:
            block = resp.read(CHUNK)
            if not block:
                break
            f.write(block)
            received += len(block)
        f.flush()
        os.fsync(f.fileno())
    return received, offset


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mismatch_message(rel, where, expected_sha, actual_sha, expected_size, actual_size,
                     pin=None):
    if pin and pin.get("lock"):
        return (
            f"{rel}: {where} has sha256 {actual_sha} ({actual_size} bytes), but "
            f"{pin['lock']} recorded sha256 {expected_sha} for {pin['repo']} {pin['file']} at "
            f"revision {pin['revision']} when it was first fetched (trust on first use). The "
            "file changed since it was locked; nothing was installed and the temporary file "
            "was removed. If the new file is the one you want, delete its entry from the "
            "lock file and run again; otherwise fix the source."
        )
    if pin and pin.get("declared"):
        return (
            f"{rel}: {where} has sha256 {actual_sha} ({actual_size} bytes), but Hugging Face "
            f"declared sha256 {expected_sha} ({expected_size} bytes) for {pin['repo']} "
            f"{pin['file']} at revision {pin['revision']} (commit {pin['commit']}). Nothing "
            "was installed, the temporary file was removed and nothing was locked. Check "
            "that model_cache_huggingface_endpoint serves Hugging Face's files unaltered."
        )
    what = (
        f"size {actual_size} bytes, expected {expected_size}"
        if expected_size is not None and actual_size != expected_size
        else f"sha256 {actual_sha}, expected {expected_sha}"
    )
    return (
        f"{rel}: {where} has {what}. Nothing was installed and the temporary file was "
        "removed. The source does not serve the file the manifest pins: fix the mirror or "
        "bundle copy of this file (or the manifest entry, if the pin is what is wrong)."
    )


def install(tmp, dest, rel, where, sha256, size, apply_attrs, pin=None):
    """Verify tmp and move it to dest; on a mismatch remove tmp and raise FetchError."""
    actual_size = os.path.getsize(tmp)
    actual = None
    # Against a lock or Hugging Face's word both digests are named, whatever the size.
    if size is None or actual_size == size or pin:
        actual = sha256_file(tmp)
    if actual != sha256:
        os.remove(tmp)
        raise FetchError(mismatch_message(rel, where, sha256, actual, size, actual_size, pin))
    apply_attrs(tmp)
    os.replace(tmp, dest)
    _fsync_dir(os.path.dirname(dest))


def ensure_dirs(path: str, root: str, mode: int) -> None:
    """Create the folders between root and path with mode (umask aside)."""
    missing = []
    d = os.path.dirname(path)
    while d and not os.path.isdir(d) and os.path.commonpath([d, root]) == root:
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        os.mkdir(d)
        os.chmod(d, mode)


def _safe_join(root: str, rel: str) -> str:
    dest = os.path.normpath(os.path.join(root, rel))
    if os.path.isabs(rel) or os.path.commonpath([dest, root]) != root or dest == root:
        raise FetchError(f"{rel}: the path leaves the cache folder {root}; fix the manifest")
    return dest


def _mode(value) -> int:
    """An octal mode given as a string ("0444") or already as a number."""
    return value if isinstance(value, int) else int(str(value), 8)


def _ids(owner, group):
    uid = gid = -1
    if owner not in (None, ""):
        uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
    if group not in (None, ""):
        gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
    return uid, gid


def run(params: dict, *, opener, head=None, check_mode: bool = False,
        sleep=time.sleep) -> dict:
    """The module's work, free of AnsibleModule. Returns the result dict; errors are
    collected in result['errors'] after every other file has been handled."""
    root = os.path.abspath(params["dir"])
    file_mode = _mode(params.get("file_mode", "0444"))
    dir_mode = _mode(params.get("dir_mode", "0755"))
    uid, gid = _ids(params.get("owner"), params.get("group"))
    verify_only = params.get("state", "present") == "verified"
    result = {
        "changed": False,
        "fetched": [],
        "replaced": [],
        "resumed": [],
        "needed": [],
        "attributes_fixed": [],
        "learned": [],
        "bytes_downloaded": 0,
        "errors": [],
    }

    def apply_attrs(path):
        os.chmod(path, file_mode)
        if uid != -1 or gid != -1:
            os.chown(path, uid, gid)

    def attrs_differ(path):
        st = os.stat(path)
        return (
            (st.st_mode & 0o7777) != file_mode
            or (uid != -1 and st.st_uid != uid)
            or (gid != -1 and st.st_gid != gid)
        )

    for art in params["artifacts"]:
        rel, sha, size = art["path"], (art.get("sha256") or "").lower(), art.get("size")
        url, hf, pin, meta = art.get("url"), art.get("hf"), None, None
        try:
            dest = _safe_join(root, rel)
            if hf and not sha:
                # Trust on first use: the digest Hugging Face declares at the revision,
                # and the download from the commit that revision resolved to.
                meta = hf_metadata(rel, hf, head=head, headers=request_headers(params, art),
                                   timeout=params.get("timeout", 60))
                sha, size, url = meta["sha256"], meta["size"], resolve_url(hf, meta["commit"])
                pin = {"declared": True, **meta}
            elif not sha:
                raise FetchError(f"{rel}: no sha256 given and no Hugging Face source to learn it")
            elif hf and art.get("lock"):
                pin = {"lock": art["lock"], "repo": hf["repo"], "file": hf["file"],
                       "revision": hf["revision"]}
            status, _ = file_status(dest, sha, size)
            if status != "ok" and hf and not art.get("lock") and not verify_only and not meta:
                # A digest pinned in manifest.yml must agree with what Hugging Face
                # declares, checked before any byte is downloaded.
                meta = hf_metadata(rel, hf, head=head, headers=request_headers(params, art),
                                   timeout=params.get("timeout", 60))
                if meta["sha256"] != sha:
                    raise FetchError(
                        f"{rel}: manifest.yml pins sha256 {sha}, but Hugging Face declares "
                        f"{meta['sha256']} for {hf['repo']} {hf['file']} at revision "
                        f"{hf['revision']} (commit {meta['commit']}). Nothing was downloaded. "
                        "Pin the revision whose file has that digest, or correct the pin."
                    )
                url = resolve_url(hf, meta["commit"])
            if status == "ok":
                if meta:
                    result["learned"].append(meta)
                if attrs_differ(dest):
                    result["changed"] = True
                    result["attributes_fixed"].append(rel)
                    if not check_mode and not verify_only:
                        apply_attrs(dest)
                continue
            result["needed"].append(rel)
            if verify_only:
                continue
            result["changed"] = True
            if status != "missing":
                result["replaced"].append(rel)
            if check_mode:
                continue
            if status != "missing":
                os.remove(dest)  # wrong: never leave it where it looks valid
            ensure_dirs(dest, root, dir_mode)
            if art.get("src") or (params.get("src_dir") and not url):
                src = art.get("src") or os.path.join(params["src_dir"], rel)
                _adopt(src, dest, rel, sha, size, apply_attrs)
            elif url:
                _fetch(url, dest, rel, sha, size, params, opener, result, apply_attrs,
                       sleep, request_headers(params, art), pin)
            else:
                raise FetchError(f"{rel}: no url or src given for a missing file")
            result["fetched"].append(rel)
            result["needed"].remove(rel)
            if meta:
                result["learned"].append(meta)
        except FetchError as err:
            result["errors"].append(str(err))
        except OSError as err:
            result["errors"].append(f"{rel}: {err}")
    return result


def _adopt(src, dest, rel, sha, size, apply_attrs):
    if not os.path.isfile(src):
        raise FetchError(f"{rel}: the bundle copy {src} is missing on the host")
    tmp = part_path(dest)
    try:
        os.replace(src, tmp)
    except OSError:  # another filesystem: copy, then drop the source
        shutil.copyfile(src, tmp)
        os.remove(src)
    install(tmp, dest, rel, f"the bundle copy ({src})", sha, size, apply_attrs)


def request_headers(params: dict, art: dict) -> dict:
    """The headers for one artifact: the common ones, plus the Hugging Face token for
    Hugging Face artifacts only (never for a mirror or another host)."""
    headers = dict(params.get("headers") or {})
    if art.get("huggingface") and params.get("huggingface_token"):
        headers["Authorization"] = f"Bearer {params['huggingface_token']}"
    return headers


def _fetch(url, dest, rel, sha, size, params, opener, result, apply_attrs, sleep, headers,
           pin=None):
    tmp = part_path(dest)
    retries = max(1, int(params.get("retries", 3)))
    fresh_retry_done = False
    attempt = 0
    while True:
        attempt += 1
        try:
            received, offset = download(
                url,
                tmp,
                opener=opener,
                headers=headers,
                timeout=params.get("timeout", 60),
                expected_size=size,
            )
        except urllib.error.HTTPError as err:
            if 400 <= err.code < 500 and err.code not in (408, 429):
                raise FetchError(
                    f"{rel}: {url} answered HTTP {err.code} {err.reason}. Check the URL "
                    "(mirror base URL and layout, pinned revision) and any token it needs."
                ) from None
            if attempt < retries:
                sleep(min(2**attempt, 10))
                continue
            raise FetchError(f"{rel}: {url} answered HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, OSError, ConnectionError, TimeoutError) as err:
            if attempt < retries:
                sleep(min(2**attempt, 10))
                continue
            kept = os.path.getsize(tmp) if os.path.exists(tmp) else 0
            raise FetchError(
                f"{rel}: download from {url} failed after {attempt} attempts ({err}). "
                f"{kept} bytes are kept in {tmp} and the next run resumes from there. "
                "Check that the host reaches the source (mirror URL, proxy, token)."
            ) from None
        result["bytes_downloaded"] += received
        if offset:
            result["resumed"].append({"path": rel, "from": offset})
        try:
            install(tmp, dest, rel, url, sha, size, apply_attrs, pin)
            return
        except FetchError:
            # A resumed file may be a prefix of another version: fetch it once whole.
            if offset and not fresh_retry_done:
                fresh_retry_done = True
                continue
            raise


def main():
    module = AnsibleModule(
        argument_spec={
            "dir": {"type": "path", "required": True},
            "artifacts": {"type": "list", "elements": "dict", "required": True},
            "state": {"type": "str", "choices": ["present", "verified"], "default": "present"},
            "src_dir": {"type": "path"},
            "headers": {"type": "dict", "default": {}, "no_log": True},
            "huggingface_token": {"type": "str", "no_log": True},
            "timeout": {"type": "int", "default": 60},
            "retries": {"type": "int", "default": 3},
            "validate_certs": {"type": "bool", "default": True},
            "file_mode": {"type": "raw", "default": "0444"},
            "dir_mode": {"type": "raw", "default": "0755"},
            "owner": {"type": "str"},
            "group": {"type": "str"},
        },
        supports_check_mode=True,
    )
    p = module.params

    def open_once(url, headers, timeout):
        return open_url(
            url,
            headers=headers,
            timeout=timeout,
            validate_certs=p["validate_certs"],
            follow_redirects="none",
        )

    opener = following_redirects(open_once)

    def head(url, headers, timeout):
        try:
            resp = open_url(url, method="HEAD", headers=headers, timeout=timeout,
                            validate_certs=p["validate_certs"], follow_redirects="none")
            return resp.getcode(), resp.headers
        except urllib.error.HTTPError as err:
            return err.code, err.headers

    for art in p["artifacts"]:
        missing = {"path"} | ({"sha256"} if not art.get("hf") else set())
        missing -= {k for k in art if art[k] is not None}
        if missing:
            module.fail_json(msg=f"artifact {art!r} lacks {', '.join(sorted(missing))}")
    result = run(p, opener=opener, head=head, check_mode=module.check_mode)
    errors = result.pop("errors")
    if errors:
        module.fail_json(msg=" | ".join(errors), errors=errors, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
