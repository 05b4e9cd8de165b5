"""deploy/kubernetes/: offline schema validation, and the PrometheusRule equals its generation.

Built-in kinds are validated with ``kubernetes-validate`` (it bundles the Kubernetes JSON
schemas) against Kubernetes 1.30 in strict mode (unknown fields are errors). The
ServiceMonitor and PrometheusRule are validated with jsonschema against the
``openAPIV3Schema`` of prometheus-operator's CRDs, vendored in tests/fixtures/k8s/ (see its
README), made strict the way the API server's strict field validation is: an object schema
with ``properties`` accepts no other field unless it preserves unknown fields. The same
validator must accept the operator's own example manifests and reject broken copies of ours.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from exporter import __version__
from exporter.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
FIXTURES = ROOT / "tests" / "fixtures" / "k8s"
KUBERNETES_VERSION = "1.30"
CRD_SCHEMAS = {
    "ServiceMonitor": FIXTURES / "servicemonitor.schema.json",
    "PrometheusRule": FIXTURES / "prometheusrule.schema.json",
}


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) for every document of every manifest in deploy/kubernetes/."""
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path.name, doc))
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def strict(schema: Any) -> Any:
    """Copy ``schema`` with ``additionalProperties: false`` where the API server prunes.

    Only applied to schema nodes: the ``properties`` map (names to schemas) is not one.
    """
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "definitions", "$defs"):
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif key in ("default", "enum", "const", "example"):
            out[key] = value  # data, not schemas
        else:
            out[key] = strict(value)
    pattern = out.get("pattern")
    if isinstance(pattern, str) and pattern.startswith("^(?i)"):
        # Go's RE2 takes a flag group anywhere; Python's re only at the start (same meaning).
        out["pattern"] = "(?i)^" + pattern.removeprefix("^(?i)")
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    schema = strict(json.loads(CRD_SCHEMAS[kind].read_text()))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate(doc: dict[str, Any]) -> None:
    if doc["kind"] in CRD_SCHEMAS:
        crd_validator(doc["kind"]).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_manifest_is_known() -> None:
    kinds = sorted(doc["kind"] for _, doc in manifests())
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "PersistentVolumeClaim", "PrometheusRule", "Secret",
         "Secret", "Secret", "Secret", "Service", "ServiceMonitor"]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "doc"), manifests(), ids=[f"{n}:{d['kind']}" for n, d in manifests()]
)
def test_manifest_validates(name: str, doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["metadata"]["namespace"] == "monitoring", name


def test_the_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.example.yaml"}


@pytest.mark.parametrize(
    "path", sorted((FIXTURES / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_the_crd_validator_accepts_the_operators_examples(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    crd_validator(doc["kind"]).validate(doc)


def _broken(kind: str, change: Any) -> dict[str, Any]:
    (doc,) = by_kind(kind)
    doc = copy.deepcopy(doc)
    change(doc)
    return doc


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        # a typo'd field
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(intervall="1m")),
        # not a duration
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(interval="a minute")),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(scheme="ftp")),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].pop("expr")),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(fore="5m")),
        ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imag="x")),
        ("Deployment", lambda d: d["spec"].update(replicas="one")),
    ],
)
def test_the_validators_reject_broken_manifests(kind: str, change: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(_broken(kind, change))


def test_the_deployment_is_locked_down() -> None:
    (deployment,) = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    # The probes have no credentials, so exactly those paths are open.
    open_paths = [
        a.split("=", 1)[1] for a in container["args"] if a.startswith("--web.health-path=")
    ]
    assert sorted(open_paths) == ["/-/healthy", "/-/ready"]
    assert any(a.startswith("--web.config.file=") for a in container["args"])
    assert container["image"].endswith(f":{__version__}")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts.values()) == set(volumes)
    # The state database sits at the image's STATE_DIRECTORY, on a volume.
    assert mounts["/var/lib/backup-exporter"] == "state"


def test_every_referenced_object_is_shipped() -> None:
    (deployment,) = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    names = {(d["kind"], d["metadata"]["name"]) for _, d in manifests()}
    for volume in pod["volumes"]:
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in names
        if "secret" in volume:
            assert ("Secret", volume["secret"]["secretName"]) in names
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert ("PersistentVolumeClaim", claim) in names
    for source in pod["containers"][0]["envFrom"]:
        assert ("Secret", source["secretRef"]["name"]) in names
    (monitor,) = by_kind("ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    secrets = {d["metadata"]["name"]: d for d in by_kind("Secret")}
    for ref in (
        endpoint["tlsConfig"]["ca"]["secret"],
        endpoint["basicAuth"]["username"],
        endpoint["basicAuth"]["password"],
    ):
        assert ref["key"] in secrets[ref["name"]]["stringData"]
    (service,) = by_kind("Service")
    assert service["metadata"]["name"] == "backup-exporter"  # the job name the rules expect
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()
    assert {p["name"] for p in service["spec"]["ports"]} == {endpoint["port"]}


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def test_the_configmap_config_and_the_web_config_are_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (configmap,) = by_kind("ConfigMap")
    secrets = {d["metadata"]["name"]: d for d in by_kind("Secret")}
    for key, value in secrets["backup-exporter-env"]["stringData"].items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "config.yml"
    path.write_text(configmap["data"]["config.yml"])
    config = load_config(path)
    assert set(config.sources) == {"pve1", "truenas", "b2"}
    # Every ${ENV} the config names comes from the Secret the Deployment loads.
    for key in secrets["backup-exporter-env"]["stringData"]:
        monkeypatch.delenv(key)
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(path)],
        capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 2
    named = {
        line.split("environment variable ")[1].split()[0]
        for line in proc.stderr.splitlines()
        if "environment variable" in line
    }
    assert named == set(secrets["backup-exporter-env"]["stringData"])
    web = yaml.safe_load(secrets["backup-exporter-web"]["stringData"]["web-config.yml"])
    assert set(web) == {"tls_server_config", "basic_auth_users"}
    assert web["tls_server_config"]["cert_file"] == "/etc/backup-exporter/tls/tls.crt"
    assert web["basic_auth_users"].keys() == {
        secrets["backup-exporter-scrape"]["stringData"]["username"]
    }


# ------------------------------------------------------------------ the generated PrometheusRule


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_rules", K8S / "generate_rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_prometheusrule_equals_a_fresh_generation() -> None:
    assert (K8S / "prometheusrule.yaml").read_text() == generator().render(), (
        "deploy/kubernetes/prometheusrule.yaml is stale: run `make k8s-rules`"
    )


def test_the_prometheusrule_holds_exactly_the_shipped_rules() -> None:
    (rule,) = by_kind("PrometheusRule")
    shipped = []
    for path in sorted((ROOT / "alerts").glob("*.rules.yml")):
        shipped.extend(yaml.safe_load(path.read_text())["groups"])
    assert rule["spec"]["groups"] == shipped


def test_the_generator_follows_a_change_of_the_rules(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts"
    alerts.mkdir()
    (alerts / "b.rules.yml").write_text(
        "groups:\n- name: b\n  rules:\n  - alert: B\n    expr: |\n      up\n        == 0\n"
    )
    (alerts / "a.rules.yml").write_text(
        "groups:\n- name: a\n  rules:\n  - record: r\n    expr: up\n"
    )
    (alerts / "notes.yml").write_text("groups: [{name: ignored, rules: []}]\n")
    doc = yaml.safe_load(generator().render(alerts))
    assert [g["name"] for g in doc["spec"]["groups"]] == ["a", "b"]
    assert doc["spec"]["groups"][1]["rules"][0]["expr"] == "up\n  == 0\n"


def test_promtool_accepts_the_generated_groups(tmp_path: Path) -> None:
    (rule,) = by_kind("PrometheusRule")
    path = tmp_path / "k8s.rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
