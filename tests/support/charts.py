"""The two install paths rendered without a cluster: `helm template` of charts/podssh and
`kubectl kustomize` of manifests/ (with components added the way the README says), as lists of
objects, plus a normal form in which the chart and the kustomize base must be equal.

The binaries are the project's own builds: helm from hack/lib/build-helm.sh, kubectl from
hack/lib/build-k8s.sh (both cached under ~/.cache/podssh; the first call builds them)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import REPO

CHART = REPO / "charts" / "podssh"
MANIFESTS = REPO / "manifests"
# What Helm adds to every templated object and kustomize has no counterpart for.
HELM_LABELS = ("app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "app.kubernetes.io/version",
               "helm.sh/chart")
RESOURCE_POLICY = "helm.sh/resource-policy"
# Cluster-wide kinds. kubectl's kustomize (v5.6) does not know ValidatingAdmissionPolicy is one
# and writes the base's namespace into it; the API ignores a namespace there, so it is dropped.
CLUSTER_WIDE = ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding", "Namespace")

Key = tuple[str, str, str]  # kind, namespace ("" for cluster-wide), name


@cache
def helm_binary() -> str:
    proc = subprocess.run([str(REPO / "hack" / "lib" / "build-helm.sh")], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/lib/build-helm.sh failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


@cache
def kubectl_binary() -> str:
    script = str(REPO / "hack" / "lib" / "build-k8s.sh")
    directory = Path(subprocess.run([script, "--dir"], capture_output=True, text=True, check=True).stdout.strip())
    if not (directory / "kubectl").exists():
        proc = subprocess.run([script], capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"hack/lib/build-k8s.sh failed:\n{proc.stderr[-3000:]}")
    return str(directory / "kubectl")


def helm(*args: str, check: bool = True, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def load_all(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def helm_template(*sets: str, release: str = "podssh", namespace: str = "podssh-system",
                  values: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """`helm template --include-crds` with `--set` for each of `sets` (key=value)."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds"]
    for path in values:
        args += ["--values", str(path)]
    for s in sets:
        args += ["--set", s]
    return load_all(helm(*args).stdout)


def kustomize(tmp: Path, components: Iterable[str] = ()) -> list[dict[str, Any]]:
    """manifests/ with `components:` added to its kustomization.yaml (as the README tells users),
    plus manifests/keep/'s host-key Secret (the namespace is the chart's --namespace)."""
    tree = tmp / "manifests"
    shutil.copytree(MANIFESTS, tree)
    names = list(components)
    if names:
        kustomization = tree / "kustomization.yaml"
        doc = yaml.safe_load(kustomization.read_text())
        doc["components"] = [f"components/{n}" for n in names]
        kustomization.write_text(yaml.safe_dump(doc))
    out = []
    for path in (tree, tree / "keep"):
        proc = subprocess.run([kubectl_binary(), "kustomize", str(path)], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        out += load_all(proc.stdout)
    return [d for d in out if d["kind"] != "Namespace"]


def key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def normal(objects: Iterable[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """The objects by key, without Helm's bookkeeping labels and resource-policy annotation:
    everything else (labels, selectors, images, args, RBAC rules, schemas) must match."""
    result: dict[Key, dict[str, Any]] = {}
    for obj in objects:
        obj = yaml.safe_load(yaml.safe_dump(obj))  # a deep copy
        meta = obj["metadata"]
        if obj["kind"] in CLUSTER_WIDE:
            meta.pop("namespace", None)
        for label in HELM_LABELS:
            meta.get("labels", {}).pop(label, None)
        meta.get("annotations", {}).pop(RESOURCE_POLICY, None)
        for field in ("labels", "annotations"):
            if field in meta and not meta[field]:
                del meta[field]
        if obj["kind"] == "ValidatingAdmissionPolicy":
            _cel_whitespace(obj["spec"])
        k = key(obj)
        assert k not in result, f"{k} rendered twice"
        result[k] = obj
    return result


def _cel_whitespace(spec: dict[str, Any]) -> None:
    """CEL ignores whitespace, and kustomize's YAML writer turns a more-indented line of a folded
    scalar (`>-`) into an extra blank line: compare the expressions with whitespace collapsed."""
    for item in [*spec.get("validations", []), *spec.get("variables", [])]:
        for field in ("expression", "messageExpression"):
            if field in item:
                item[field] = " ".join(item[field].split())


def find(objects: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered"
    return matches[0]
