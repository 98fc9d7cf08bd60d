#!/usr/bin/env python3
"""Fill (or check) a model cache folder outside Ansible, with the model_cache role's own
logic: the plan of plugins/module_utils/model_cache_plan.py and model_cache_lock.py, and
the fetch of plugins/modules/model_cache_fetch.py (its `run`: resumable downloads, sha256
checks, atomic moves, trust on first use for Hugging Face companions). Only an opener
over urllib is added here, in place of Ansible's open_url.

charts/kokoro-deploy runs this script in its model Job (and, with --verify, in each
service's init container) from the Kokoro image, which has Python and PyYAML; the chart
mounts this file, those three modules and manifest.yml in the layout they have in this
repository, so the imports below work unchanged.

  tools/model_cache_job.py --dir /models --engines onnx --voices all \
      [--companions llm/qwen3-8b-q4_k_m] [--source mirror --mirror-url URL] [--verify]

Digests that Hugging Face declared for companions (trust on first use) are recorded in
<dir>/models.lock.yml (the lock format of roles/model_cache), read back by later runs and
by --verify. Environment: HF_TOKEN (a Hugging Face token, sent only to Hugging Face),
SSL_CERT_FILE (a CA bundle, e.g. a corporate proxy's). Exit 0: every file is in place;
1: something is missing or wrong (the messages say what); 2: bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml

# The kit's collection, as Ansible finds it beside the playbooks (see tools/bundle.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ansible" / "collections"))
from ansible_collections.kokoro.deploy.plugins.module_utils import (
    model_cache_lock,
    model_cache_plan,
)
from ansible_collections.kokoro.deploy.plugins.modules import model_cache_fetch

LOCK_NAME = "models.lock.yml"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects come back as HTTPError; model_cache_fetch.following_redirects decides
    where to go next (and drops the token on the way to another host)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _ssl_context() -> ssl.SSLContext:
    cafile = os.environ.get("SSL_CERT_FILE") or None
    if cafile is None:
        try:  # the slim images carry no system CA store, but pip's certifi comes along
            import certifi

            cafile = certifi.where()
        except ImportError:
            pass
    return ssl.create_default_context(cafile=cafile)


def openers(timeout_default: int = 60):
    """(opener, head) as model_cache_fetch.run wants them, over urllib."""
    raw = urllib.request.build_opener(
        _NoRedirect, urllib.request.HTTPSHandler(context=_ssl_context())
    )

    def open_once(url, headers, timeout):
        return raw.open(urllib.request.Request(url, headers=headers),
                        timeout=timeout or timeout_default)

    def head(url, headers, timeout):
        try:
            resp = raw.open(urllib.request.Request(url, headers=headers, method="HEAD"),
                            timeout=timeout or timeout_default)
            return resp.status, resp.headers
        except urllib.error.HTTPError as err:
            return err.code, err.headers

    return model_cache_fetch.following_redirects(open_once), head


def _split(value: str) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def read_yaml(path: Path):
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def plan(args) -> list[dict]:
    """The planned artifacts (model_cache_plan.plan_sources' entries)."""
    manifest = yaml.safe_load(Path(args.manifest).read_text())
    lock_path = Path(args.dir) / LOCK_NAME
    # The chart's lock (the controller's models.lock.yml, if given) and what earlier runs
    # learned; an entry of the given lock wins.
    lock = model_cache_lock.merge_lock(read_yaml(lock_path), [])
    given = read_yaml(Path(args.lock)) if args.lock else None
    if given:
        lock["files"].update(model_cache_lock.lock_files(given, args.lock))
    chosen = model_cache_plan.select_artifacts(
        manifest, _split(args.engines), _split(args.voices), _split(args.extra_groups)
    ) + model_cache_lock.companion_artifacts(manifest, _split(args.companions), lock,
                                             str(lock_path))
    return model_cache_plan.plan_sources(
        chosen, args.source, args.mirror_url, {}, args.hf_endpoint
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", required=True, help="manifest.yml")
    p.add_argument("--dir", required=True, help="the model cache folder")
    p.add_argument("--engines", default="onnx", help="Kokoro engines: onnx,torch")
    p.add_argument("--voices", default="all", help="voice ids, or all")
    p.add_argument("--extra-groups", default="", help="more manifest groups (spacy)")
    p.add_argument("--companions", default="", help="e.g. llm/qwen3-8b-q4_k_m")
    p.add_argument("--source", default="upstream", choices=["upstream", "mirror"])
    p.add_argument("--mirror-url", default="")
    p.add_argument("--hf-endpoint", default="https://huggingface.co")
    p.add_argument("--lock", default="", help="a models.lock.yml to trust (optional)")
    p.add_argument("--timeout", type=int, default=60)
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--verify", action="store_true", help="check only; change nothing")
    args = p.parse_args(argv)
    try:
        planned = plan(args)
    except (ValueError, KeyError, OSError) as err:
        print(f"model_cache_job: {err}", file=sys.stderr)
        return 2
    # Companions not yet locked cannot be verified without asking Hugging Face: say so.
    unlocked = [a["path"] for a in planned if not a["sha256"]]
    if args.verify and unlocked:
        print(f"model_cache_job: not fetched yet (no digest recorded): {unlocked}",
              file=sys.stderr)
        return 1
    opener, head = openers(args.timeout)
    result = model_cache_fetch.run(
        {
            "dir": args.dir,
            "artifacts": planned,
            "state": "verified" if args.verify else "present",
            "huggingface_token": os.environ.get("HF_TOKEN") or None,
            "timeout": args.timeout,
            "retries": args.retries,
        },
        opener=opener,
        head=head,
    )
    if result["learned"]:
        lock_path = Path(args.dir) / LOCK_NAME
        merged = model_cache_lock.merge_lock(read_yaml(lock_path), [result["learned"]],
                                             str(lock_path))
        tmp = lock_path.with_name(f".{LOCK_NAME}.part")
        tmp.write_text(yaml.safe_dump(merged, sort_keys=True))
        os.replace(tmp, lock_path)
    errors = result.pop("errors")
    print(json.dumps({k: v for k, v in result.items() if v}, indent=1, sort_keys=True))
    for err in errors:
        print(f"model_cache_job: {err}", file=sys.stderr)
    if errors or (args.verify and result["needed"]):
        if args.verify and result["needed"]:
            print(f"model_cache_job: missing or wrong: {result['needed']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
