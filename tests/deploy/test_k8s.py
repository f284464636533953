"""deploy/k8s without a cluster: schemas, and the wiring between the objects.

Rendered with `kubectl kustomize` where kubectl exists (by hand otherwise: the resources with
the namespace and image set), then: built-in kinds against Kubernetes' own JSON schemas
(`kubernetes-validate`, strict: unknown fields fail); the custom resources (ServiceMonitor,
PrometheusRule, ScaledObject) against `crd_schemas.yaml`, with their metadata, label selectors
and HPA behavior checked by the Kubernetes schemas of those types.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from server.settings import Settings
from tests.deploy.conftest import DEPLOY, load_all_yaml, load_yaml

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30"
CRD_SCHEMAS = load_yaml(Path(__file__).parent / "crd_schemas.yaml")
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
Doc = dict[str, Any]


def render() -> list[Doc]:
    """The objects `kubectl apply -k deploy/k8s` would send."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        cmd = [kubectl, "kustomize", str(K8S)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
        return [d for d in yaml.safe_load_all(out) if d is not None]
    kustomization = load_yaml(K8S / "kustomization.yaml")
    image = kustomization["images"][0]
    docs = [d for name in kustomization["resources"] for d in load_all_yaml(K8S / name)]
    for doc in docs:
        if doc["kind"] != "Namespace":
            doc["metadata"]["namespace"] = kustomization["namespace"]
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            if c["image"] == image["name"]:
                c["image"] = f"{image['newName']}:{image['newTag']}"
    return docs


DOCS = render()


def one(kind: str) -> Doc:
    (doc,) = [d for d in DOCS if d["kind"] == kind]
    return doc


def validate_builtin(doc: Doc) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def validate_custom(doc: Doc) -> None:
    schema = {"$ref": f"#/$defs/{doc['kind']}", "$defs": CRD_SCHEMAS["$defs"]}
    jsonschema.Draft202012Validator(schema).validate(doc)
    # The parts whose types Kubernetes defines, through built-in objects that hold them:
    validate_builtin({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]})
    spec = doc["spec"]
    if "selector" in spec:
        pdb = {"metadata": {"name": "x"}, "spec": {"selector": spec["selector"]}}
        validate_builtin({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", **pdb})
    hpa_config = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
    if "behavior" in hpa_config:
        target = {"kind": "Deployment", "name": "x", "apiVersion": "apps/v1"}
        hpa = {"scaleTargetRef": target, "maxReplicas": 1, "behavior": hpa_config["behavior"]}
        validate_builtin(
            {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "spec": hpa}
            | {"metadata": {"name": "x"}}
        )


def validate(doc: Doc) -> None:
    (validate_custom if doc["kind"] in CUSTOM_KINDS else validate_builtin)(doc)


@pytest.mark.parametrize("doc", DOCS, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in DOCS])
def test_manifest_matches_its_schema(doc: Doc) -> None:
    validate(doc)


def test_the_validation_catches_typos() -> None:
    """A misspelt field fails, in a built-in kind and in a custom one."""
    deployment = copy.deepcopy(one("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    monitor = copy.deepcopy(one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    scaled = copy.deepcopy(one("ScaledObject"))
    del scaled["spec"]["triggers"][0]["metadata"]["query"]
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(load_yaml(K8S / "kustomization.yaml")["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert {d["kind"] for d in DOCS} >= CUSTOM_KINDS | {"Deployment", "Service", "Ingress"}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_probes_gpu_and_drain() -> None:
    deployment, config = one("Deployment"), one("ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert [p["name"] for p in server["ports"]] == ["http"]
    assert server["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    drain = float(config["data"]["PACKCACHE_DRAIN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] >= drain + 20  # record, close, exit
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0  # a rollout never drops below the current replicas


def test_objects_refer_to_each_other() -> None:
    deployment, service = one("Deployment"), one("Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert matches(service["spec"]["selector"], pod_labels)
    assert matches(one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    port_names = {p["name"] for p in service["spec"]["ports"]}
    monitor = one("ServiceMonitor")["spec"]
    assert matches(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
    assert {e["port"] for e in monitor["endpoints"]} <= port_names
    assert {e["path"] for e in monitor["endpoints"]} == {"/metrics"}
    backends = [
        p["backend"]["service"]
        for rule in one("Ingress")["spec"]["rules"]
        for p in rule["http"]["paths"]
    ]
    assert backends == [{"name": service["metadata"]["name"], "port": {"name": "http"}}]
    scaled = one("ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    waiting = [t for t in scaled["triggers"] if "packcache_num_requests_waiting" in str(t)]
    assert waiting, "the autoscaler must follow waiting requests"

    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    claims = {d["metadata"]["name"]: d for d in DOCS if d["kind"] == "PersistentVolumeClaim"}
    data = claims[volumes["data"]["persistentVolumeClaim"]["claimName"]]
    assert data["spec"]["accessModes"] == ["ReadWriteMany"]  # videos on every replica
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] in claims


def test_settings_are_real_settings_and_the_store_is_shared() -> None:
    (server,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    names = set(one("ConfigMap")["data"]) | {e["name"] for e in server["env"]}
    known = {f"PACKCACHE_{name.upper()}" for name in Settings.model_fields}
    assert names - known == set(), "misspelt settings"
    # Several replicas share one PostgreSQL job store (SQLite is one process's).
    store = next(e for e in server["env"] if e["name"] == "PACKCACHE_STORE_URL")
    assert store["valueFrom"]["secretKeyRef"]["key"] == "url"
    assert one("ConfigMap")["data"]["PACKCACHE_DATA_DIR"] == "/data"


def test_prometheus_rule_holds_the_compose_rules() -> None:
    rules = load_yaml(DEPLOY / "prometheus" / "rules" / "packcache.yml")
    assert one("PrometheusRule")["spec"] == rules
