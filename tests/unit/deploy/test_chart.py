"""charts/podssh with a real helm binary (hack/lib/build-helm.sh), no cluster: it lints, its
defaults render exactly the kustomize base of manifests/, each toggle renders exactly the
matching kustomize component, and the non-default values do what values.yaml says."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from tests.support.charts import (
    CHART,
    MANIFESTS,
    RESOURCE_POLICY,
    find,
    helm,
    helm_template,
    kustomize,
    normal,
)
from tests.support.cluster import REPO

# Chart value that switches each kustomize component on.
COMPONENTS = {
    "impersonation": ["impersonation.enabled=true"],
    "networkpolicy": ["networkPolicy.enabled=true"],
    "monitoring": ["monitoring.podMonitor.enabled=true", "monitoring.grafanaDashboard.enabled=true",
                   "monitoring.prometheusRule.enabled=true"],
    "debug-containers": ["debugContainers.enabled=true"],
}
ALL_ON = [s for sets in COMPONENTS.values() for s in sets]


def assert_same_objects(chart: list[dict], base: list[dict]) -> None:
    got, want = normal(chart), normal(base)
    assert sorted(got) == sorted(want), "chart and kustomize render different objects"
    for k in want:
        assert got[k] == want[k], f"{k} differs:\nchart: {yaml.safe_dump(got[k])}\nkustomize: {yaml.safe_dump(want[k])}"


def test_every_kustomize_component_has_a_chart_value() -> None:
    on_disk = sorted(p.name for p in (MANIFESTS / "components").iterdir() if p.is_dir())
    assert on_disk == sorted(COMPONENTS)


@pytest.mark.parametrize("sets", [[], ALL_ON], ids=["defaults", "everything-on"])
def test_helm_lint_strict(sets: list[str]) -> None:
    args = ["lint", str(CHART), "--strict", "--namespace", "podssh-system"]
    for s in sets:
        args += ["--set", s]
    proc = helm(*args)
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


def test_defaults_render_the_kustomize_base(tmp_path: Path) -> None:
    assert_same_objects(helm_template(), kustomize(tmp_path))


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_each_toggle_renders_its_kustomize_component(component: str, tmp_path: Path) -> None:
    assert_same_objects(helm_template(*COMPONENTS[component]), kustomize(tmp_path, [component]))


def test_all_toggles_together(tmp_path: Path) -> None:
    assert_same_objects(helm_template(*ALL_ON), kustomize(tmp_path, sorted(COMPONENTS)))


def test_the_equivalence_check_sees_a_drift(tmp_path: Path) -> None:
    """The comparison is not vacuous: one RBAC verb more in the base is a difference."""
    chart = helm_template()
    base = kustomize(tmp_path)
    find(base, "ClusterRole", "podssh-gateway")["rules"][0]["verbs"].append("watch")
    with pytest.raises(AssertionError, match="ClusterRole"):
        assert_same_objects(chart, base)


def test_crd_and_dashboard_copies_are_byte_identical() -> None:
    """The chart cannot read files outside itself: these are copies, kept identical."""
    pairs = [(MANIFESTS / "crd.yaml", CHART / "crds" / "crds.yaml"),
             (MANIFESTS / "components" / "monitoring" / "grafana-dashboard.json",
              CHART / "files" / "grafana-dashboard.json"),
             (MANIFESTS / "components" / "monitoring" / "prometheusrule.yaml",
              CHART / "files" / "prometheusrule.yaml")]
    for source, copy in pairs:
        assert copy.read_bytes() == source.read_bytes(), f"cp {source.relative_to(REPO)} {copy.relative_to(REPO)}"


def test_chart_and_kustomize_image_follow_the_package_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version and chart["version"] == version
    images = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["images"]
    assert images == [{"name": "podssh", "newTag": version}]
    gateway = find(helm_template(), "Deployment", "podssh")["spec"]["template"]["spec"]["containers"][0]
    assert gateway["image"] == f"podssh:{version}"


def test_prometheus_rule_keeps_its_prometheus_templates() -> None:
    """Helm must not expand the alerts' own {{ $labels.pod }}: they reach Prometheus as written."""
    rule = find(helm_template("monitoring.prometheusRule.enabled=true"), "PrometheusRule", "podssh")
    summaries = [r["annotations"]["summary"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert summaries and all("{{ $labels.pod }}" in s for s in summaries)


def test_host_key_secret_is_kept_by_helm_uninstall() -> None:
    secret = find(helm_template(), "Secret", "podssh-hostkeys")
    assert secret["metadata"]["annotations"][RESOURCE_POLICY] == "keep"
    assert "data" not in secret and "stringData" not in secret  # the gateway fills it in
    assert not [o for o in helm_template("hostKeys.create=false") if o["kind"] == "Secret"]


def test_debug_containers_rbac_is_off_by_default() -> None:
    def ephemeral_rules(objects: list[dict]) -> list[dict]:
        return [r for o in objects if o["kind"] in ("ClusterRole", "Role") for r in o["rules"]
                if "pods/ephemeralcontainers" in r["resources"]]

    assert ephemeral_rules(helm_template()) == []
    assert ephemeral_rules(helm_template("debugContainers.enabled=true")) == [
        {"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["patch"]}]


def test_image_values() -> None:
    def gateway(*sets: str) -> dict:
        deploy = find(helm_template(*sets), "Deployment", "podssh")
        return deploy["spec"]["template"]["spec"]["containers"][0]

    assert gateway("image.repository=registry.example.com/team/podssh", "image.tag=1.2.3")["image"] == \
        "registry.example.com/team/podssh:1.2.3"
    digest = "sha256:" + "ab" * 32
    pinned = gateway("image.repository=registry.example.com/podssh", "image.tag=1.2.3", f"image.digest={digest}")
    assert pinned["image"] == f"registry.example.com/podssh@{digest}"
    assert gateway("image.pullPolicy=Always")["imagePullPolicy"] == "Always"
    assert "imagePullPolicy" not in gateway("image.pullPolicy=")


def test_service_values() -> None:
    def ssh_service(*sets: str) -> dict:
        return find(helm_template(*sets), "Service", "podssh")["spec"]

    default = ssh_service()
    assert default["type"] == "LoadBalancer" and default["externalTrafficPolicy"] == "Local"
    node_port = ssh_service("service.type=NodePort", "service.nodePort=30022", "service.externalTrafficPolicy=Cluster")
    assert node_port["type"] == "NodePort" and node_port["externalTrafficPolicy"] == "Cluster"
    assert node_port["ports"] == [{"name": "ssh", "port": 22, "targetPort": "ssh", "nodePort": 30022}]
    # ClusterIP Services have neither (the API server would refuse externalTrafficPolicy).
    internal = ssh_service("service.type=ClusterIP", "service.nodePort=30022")
    assert "externalTrafficPolicy" not in internal and "nodePort" not in internal["ports"][0]


def test_replicas_args_and_release_naming() -> None:
    objects = helm_template("replicas=3", "impersonation.enabled=true", "extraArgs[0]=--banner=hello world",
                            release="gw", namespace="ops")
    deploy = find(objects, "Deployment", "gw-podssh")
    assert deploy["metadata"]["namespace"] == "ops" and deploy["spec"]["replicas"] == 3
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gw-podssh"
    args = pod["containers"][0]["args"]
    assert "--host-key-secret=$(POD_NAMESPACE)/gw-podssh-hostkeys" in args
    assert args[-2:] == ["--impersonate", "--banner=hello world"]
    # Cluster-wide objects are named after the release: two releases never collide.
    cluster_wide = sorted(o["metadata"]["name"] for o in objects if "namespace" not in o["metadata"]
                          and o["kind"] != "CustomResourceDefinition")
    assert cluster_wide and all(n.startswith("gw-podssh-") for n in cluster_wide), cluster_wide
    for binding in (o for o in objects if o["kind"] == "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gw-podssh", "namespace": "ops"}]
    role = find(objects, "Role", "gw-podssh-hostkeys")
    assert role["rules"][0]["resourceNames"] == ["gw-podssh-hostkeys"]
    policy = find(objects, "ValidatingAdmissionPolicyBinding", "gw-podssh-grantor-may-impersonate")
    assert policy["spec"]["policyName"] == "gw-podssh-grantor-may-impersonate"


def test_values_schema_refuses_a_typo() -> None:
    proc = helm("template", "podssh", str(CHART), "--set", "replicas=two", check=False)
    assert proc.returncode != 0 and "replicas" in proc.stderr
    proc = helm("template", "podssh", str(CHART), "--set", "service.type=Public", check=False)
    assert proc.returncode != 0 and "service" in proc.stderr
