#!/usr/bin/env bash
# Screenshot of Prometheus' own graph page with a live Kokoro series, for the README
# (docs/monitoring-prometheus.png). Off the scenario's critical path: it converges the
# stack scenario's host (site.yml and monitoring.yml; or reuses it when it is up), makes
# speech through the acceptance checks, forwards Prometheus from the host's loopback to the container's
# address, and opens the page in headless Chromium (tests/testbed/browser.sh).
#   tests/molecule/stack/screenshot.sh [--keep]   (--keep: leave the host up; a host
#   already up is reused)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
export PATH="$root/.venv/bin:$PATH"
cd "$root/tests"
bash "$root/tests/testbed/browser.sh"
ctr=stack-debian12
if [ "$(docker inspect -f '{{.State.Running}}' "$ctr" 2>/dev/null)" != true ]; then
  molecule create -s stack
  molecule prepare -s stack
  molecule converge -s stack
fi
molecule verify -s stack   # real speech, so Kokoro's series move
docker exec -d "$ctr" python3 -c '
import socket, threading
def pipe(a, b):
    try:
        while (d := a.recv(65536)):
            b.sendall(d)
    finally:
        a.close(); b.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 19090)); s.listen()
while True:
    c, _ = s.accept(); u = socket.create_connection(("127.0.0.1", 9090))
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
'
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$ctr")
sleep 2
python3 - "$ip" "$root/docs/monitoring-prometheus.png" <<'PY'
import shutil, sys, time, urllib.parse
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
ip, out = sys.argv[1], sys.argv[2]
expr = 'sum by (host, route, status) (increase(kokoro_requests_total[1m]))'
url = (f"http://{ip}:19090/graph?" + urllib.parse.urlencode(
    {"g0.expr": expr, "g0.tab": "0", "g0.range_input": "5m", "g0.stacked": "0"}))
opts = webdriver.ChromeOptions()
opts.binary_location = shutil.which("chromium")  # Debian's; Selenium Manager cannot download here
for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1150"):
    opts.add_argument(arg)
driver = webdriver.Chrome(options=opts, service=Service(executable_path=shutil.which("chromedriver")))
try:
    driver.get(url)
    time.sleep(6)
    driver.save_screenshot(out)
finally:
    driver.quit()
print("saved", out)
PY
[ "${1:-}" = "--keep" ] || molecule destroy -s stack
