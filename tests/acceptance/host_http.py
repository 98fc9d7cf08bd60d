"""HTTP(S) requests made on the host under test, as a client there would make them:
`python3 -c` with the standard library only, so nothing is installed on the host.

requests(host, [request, ...]) sends each request in order and answers, in the same
order, {"status", "bytes", "sha256", "headers" (lower-case names), "body"} or {"error"}
(connection, TLS or timeout problems, named). A request is a dict: url; method (default
GET, POST with a body); body (sent as JSON); key (Bearer); name (TLS server name and Host
header); host (another Host header); ca (CA file to verify against; "" for the
system's); full (the whole body, else its first 400 characters).
"""

import json

CLIENT = r"""
import hashlib, http.client, json, socket, ssl, sys, urllib.parse
out = []
for r in json.loads(sys.argv[1]):
    u = urllib.parse.urlsplit(r["url"])
    try:
        sock = socket.create_connection((u.hostname, u.port), timeout=30)
        if u.scheme == "https":
            ctx = ssl.create_default_context(cafile=r.get("ca") or None)
            sock = ctx.wrap_socket(sock, server_hostname=r.get("name") or u.hostname)
        sock.settimeout(300)
        conn = http.client.HTTPConnection(u.hostname, u.port)
        conn.sock = sock
        headers = {"Content-Type": "application/json",
                   "Host": r.get("host") or r.get("name") or u.hostname}
        if r.get("key"):
            headers["Authorization"] = "Bearer " + r["key"]
        body = json.dumps(r["body"]).encode() if r.get("body") is not None else None
        method = r.get("method") or ("POST" if body else "GET")
        conn.request(method, (u.path or "/") + ("?" + u.query if u.query else ""), body=body,
                     headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        text = data.decode("utf-8", "replace")
        out.append({"status": resp.status, "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "headers": {k.lower(): v for k, v in resp.getheaders()},
                    "body": text if r.get("full") else text[:400]})
    except Exception as exc:
        out.append({"error": type(exc).__name__ + ": " + str(exc)})
print(json.dumps(out))
"""


def requests(host, batch: list[dict]) -> list[dict]:
    out = host.run("python3 -c %s %s", CLIENT, json.dumps(batch))
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)


def request(host, **one) -> dict:
    return requests(host, [one])[0]
