"""The Kubernetes manifests of deploy/kubernetes (issue 26): valid against the Kubernetes schemas, and holding
the properties the fleet relies on (non-root pods, probes on model readiness, one repository read-only in
the servers and writable only by a swap, only the entry model routed from outside).

Offline and fast: kubernetes-validate ships the JSON schemas of each Kubernetes release, and strict mode
rejects unknown fields, so a misspelt setting (say `readOnlyRootFileSystem`) fails here instead of being
dropped silently by the API server. Nothing here runs a cluster: the manifests are checked, not deployed.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.37.0"  # the newest release kubernetes-validate 1.37.0 ships schemas for
ONE_OFF = {"swap-job.yaml", "tools-pod.yaml"}  # created per run with `kubectl create`, not applied by kustomize
ENTRY = "dnc"  # the default entry model name, in the probe and Ingress paths
STEP_SUFFIXES = ("_prep", "_embed", "_head")


def _load() -> list[tuple[str, dict]]:
    """(file name, document) for every YAML document under deploy/kubernetes."""
    return [(p.name, doc) for p in sorted(DEPLOY.glob("*.yaml"))
            for doc in yaml.safe_load_all(p.read_text()) if doc]


DOCS = _load()
RESOURCES = [(f, d) for f, d in DOCS if d["kind"] != "Kustomization"]


def _one(kind: str, name: str | None = None, file: str | None = None) -> dict:
    found = [d for f, d in DOCS if d["kind"] == kind and (name is None or d["metadata"].get("name") == name)
             and (file is None or f == file)]
    assert len(found) == 1, (kind, name, file, len(found))
    return found[0]


def _pod_specs() -> list[tuple[str, dict]]:
    """(where, pod spec) of every workload: Deployments' and Jobs' templates, and bare Pods."""
    out = []
    for f, d in RESOURCES:
        if d["kind"] in ("Deployment", "Job"):
            out.append((f"{f}:{d['kind']}", d["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((f"{f}:Pod", d["spec"]))
    return out


def _dockerfile_ids(path: Path) -> tuple[int, int]:
    """(uid, gid) the Dockerfile gives its user, read from its useradd/groupadd lines."""
    text = path.read_text()
    uid = re.search(r"useradd\b[^\n]*--uid (\d+)", text)
    gid = re.search(r"groupadd\b[^\n]*--gid (\d+)", text)
    assert uid and gid, f"{path} gives its user no fixed --uid/--gid"
    return int(uid[1]), int(gid[1])


def _triton_container() -> dict:
    (container,) = _one("Deployment", "dnc-triton")["spec"]["template"]["spec"]["containers"]
    return container


def _swap_job() -> dict:
    return _one("Job", file="swap-job.yaml")


def test_the_manifests_are_found():
    kinds = sorted(d["kind"] for _, d in DOCS)
    assert kinds == sorted(["Kustomization", "PersistentVolumeClaim", "Deployment", "Service", "Service",
                            "Service", "Ingress", "NetworkPolicy", "PodDisruptionBudget", "Job", "Pod"]), kinds


def _id(file: str, doc: dict) -> str:
    meta = doc["metadata"]
    return f"{file}:{doc['kind']}/{meta.get('name') or meta.get('generateName')}"


@pytest.mark.parametrize("file,doc", RESOURCES, ids=[_id(f, d) for f, d in RESOURCES])
def test_every_manifest_is_valid_against_the_kubernetes_schemas(file, doc):
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.37"


@pytest.mark.parametrize("change", ["misspelt field", "wrong type", "misspelt security field"])
def test_the_validator_rejects_a_broken_deployment(change):
    """The schema check can fail: a copy of the Deployment with one mistake is refused."""
    bad = copy.deepcopy(_one("Deployment", "dnc-triton"))
    if change == "misspelt field":
        bad["spec"]["replica"] = bad["spec"].pop("replicas")
    elif change == "wrong type":
        bad["spec"]["replicas"] = "three"
    else:  # the field a lax check would drop, leaving the root filesystem writable
        sc = bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        sc["readOnlyRootFileSystem"] = sc.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_the_kustomization_lists_files_that_exist_and_not_the_one_off_runs():
    kust = _one("Kustomization")
    listed = kust["resources"]
    assert all((DEPLOY / name).is_file() for name in listed), listed
    assert sorted(listed) == sorted({f for f, _ in RESOURCES} - ONE_OFF)
    assert not ONE_OFF & set(listed)
    assert "namespace" not in kust  # chosen at apply time (-n), as no manifest names one
    assert all("namespace" not in d["metadata"] for _, d in RESOURCES)
    # the image it rewrites is the one the Deployment names
    assert {i["name"] for i in kust["images"]} == {_triton_container()["image"]}


def test_every_pod_runs_unprivileged_as_the_images_user():
    uid, gid = _dockerfile_ids(ROOT / "Dockerfile")
    assert (uid, gid) == _dockerfile_ids(DEPLOY / "tools.Dockerfile")  # what one writes, the other reads
    assert uid >= 1000
    specs = _pod_specs()
    assert len(specs) == 3
    for where, spec in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert (psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]) == (uid, gid, gid), where
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        assert "hostNetwork" not in spec and "hostPID" not in spec, where
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (where, c["name"])
            assert not sc.get("privileged") and "runAsUser" not in sc, (where, c["name"])
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) & set(c["resources"]["limits"])


def test_the_tools_image_runs_as_that_user():
    uid, gid = _dockerfile_ids(DEPLOY / "tools.Dockerfile")
    users = re.findall(r"^USER (\S+)$", (DEPLOY / "tools.Dockerfile").read_text(), re.M)
    assert users[-1] == f"{uid}:{gid}"


def test_the_servers_run_the_dockerfiles_command_with_a_gpu():
    c = _triton_container()
    # no command/args: the image's CMD (poll mode, strict readiness, locked APIs) is what runs, and
    # tests/serving/test_repository.py holds that CMD to `dnc serve`'s flags
    assert "command" not in c and "args" not in c
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert {"/models", "/tmp", "/dev/shm"} <= set(mounts)  # the writable places of a read-only root
    volumes = {v["name"]: v for v in _one("Deployment", "dnc-triton")["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"


def test_probes_ask_the_entry_model_not_the_whole_server():
    c = _triton_container()
    ready, startup, live = (c[p]["httpGet"] for p in ("readinessProbe", "startupProbe", "livenessProbe"))
    for probe in (ready, startup):
        # /v2/health/ready is false while any model reloads (every swap), on every replica at once
        assert probe["path"] == f"/v2/models/{ENTRY}/ready" and probe["path"] != "/v2/health/ready"
        assert re.fullmatch(r"/v2/models/[a-z][a-z0-9_]*/ready", probe["path"])
    assert live["path"] == "/v2/health/live"
    assert {ready["port"], startup["port"], live["port"]} == {"http"}
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 300  # slow loads


def test_the_repository_is_read_only_in_the_servers_and_writable_in_the_swap():
    deployment_spec = _one("Deployment", "dnc-triton")["spec"]["template"]["spec"]
    pvc = _one("PersistentVolumeClaim", "dnc-models")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # mounted by pods on several nodes at once

    def model_mount(spec: dict, container: dict) -> tuple[dict, dict]:
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/models"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        return mount, volume

    mount, volume = model_mount(deployment_spec, _triton_container())
    assert mount["readOnly"] is True and volume["persistentVolumeClaim"]["readOnly"] is True
    job_spec = _swap_job()["spec"]["template"]["spec"]
    (swap,) = job_spec["containers"]
    job_mount, job_volume = model_mount(job_spec, swap)
    assert not job_mount.get("readOnly") and not job_volume["persistentVolumeClaim"].get("readOnly")
    assert job_mount.get("subPath") == mount.get("subPath") == "repository"  # the same folder of the volume
    (sets,) = [m for m in swap["volumeMounts"] if m["mountPath"] == "/sets"]
    assert sets["readOnly"] is True and sets["subPath"] != "repository"  # not a folder Triton polls


def test_the_swap_job_reaches_every_replica_through_the_headless_service():
    job = _swap_job()
    (swap,) = job["spec"]["template"]["spec"]["containers"]
    cmd = swap["command"] + swap.get("args", [])
    assert cmd[:2] == ["dnc", "swap"]
    opts = dict(zip(cmd[2::2], cmd[3::2], strict=True))
    assert opts["--repo"] == "/models" and opts["--centroids"].startswith("/sets/")
    host, port = opts["--replicas"].split(":")
    headless = _one("Service", host)
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is False
    assert int(port) in [p["port"] for p in headless["spec"]["ports"]]
    assert job["spec"]["backoffLimit"] == 0 and "name" not in job["metadata"]  # generateName: one Job per swap
    # the NetworkPolicy lets it in
    client = _one("NetworkPolicy")["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert client.items() <= job["spec"]["template"]["metadata"]["labels"].items()


def test_the_ingress_routes_only_the_entry_model():
    # inference, metadata, readiness and the config `dnc classify` reads; the server's health
    allowed = {f"/v2/models/{ENTRY}/{leaf}" for leaf in ("infer", "ready", "config")} | {
        f"/v2/models/{ENTRY}", "/v2/health/live", "/v2/health/ready"}
    ingress = _one("Ingress")
    assert "defaultBackend" not in ingress["spec"]  # nothing unrouted falls through to the server
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert {p["path"] for p in paths} == allowed
    for p in paths:
        # Exact: a Prefix /v2/models/dnc would also admit .../config, .../versions/1/infer and more
        assert p["pathType"] == "Exact", p
        assert not any(s in p["path"] for s in STEP_SUFFIXES), p
        assert not any(api in p["path"] for api in ("/v2/repository", "sharedmemory", "trace", "logging", "stats")), p
        assert p["backend"]["service"] == {"name": "dnc-triton", "port": {"name": "http"}}, p
    http = [p for p in _one("Service", "dnc-triton")["spec"]["ports"] if p["name"] == "http"]
    assert http and http[0]["port"] == 8000


def test_the_services_keep_metrics_apart_and_stay_in_the_cluster():
    pod_labels = _one("Deployment", "dnc-triton")["spec"]["template"]["metadata"]["labels"]
    for name in ("dnc-triton", "dnc-triton-replicas", "dnc-triton-metrics"):
        svc = _one("Service", name)["spec"]
        assert svc.get("type", "ClusterIP") == "ClusterIP", name
        assert svc["selector"].items() <= pod_labels.items(), name
    assert 8002 not in [p["port"] for p in _one("Service", "dnc-triton")["spec"]["ports"]]
    assert [p["port"] for p in _one("Service", "dnc-triton-metrics")["spec"]["ports"]] == [8002]
    grpc = [p for p in _one("Service", "dnc-triton")["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc[0]["appProtocol"] == "grpc"
    # metrics only from the monitoring rule, HTTP/gRPC never from it
    policy = _one("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    for rule in policy["ingress"]:
        ports = {p["port"] for p in rule["ports"]}
        assert ports in ({8000, 8001}, {8000}, {8002}), rule
        if 8002 in ports:
            assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name":
                                                                           "monitoring"}}}]


def test_the_fleet_survives_one_replica_going():
    deployment = _one("Deployment", "dnc-triton")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    pdb = _one("PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["maxUnavailable"] < spec["replicas"]
    (spread,) = spec["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"].items() <= pod_labels.items()
