"""Grantors for the admission tests: a ServiceAccount that may write SSHAccess objects and exec
in some namespaces (and nothing else unless asked), and a server-side dry run as someone."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

from tests.support.cluster import Cluster

GRANT_AND_EXEC = (
    "- {apiGroups: [podssh.dev], resources: [sshaccesses], verbs: [get, list, create, update, patch, delete]}\n"
    '- {apiGroups: [""], resources: [pods/exec], verbs: [get, create]}\n'
)


def make_grantor(cluster: Cluster, home: str, name: str, namespaces: Sequence[str], prefix: str) -> str:
    """The ServiceAccount `home/name`, with Role+RoleBinding `PREFIX-grant-and-exec` in each of
    `namespaces`; returns its user name for --as."""
    cluster.apply(f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {home}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: {home}}}
""")
    for ns in namespaces:
        cluster.apply(f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {prefix}-grant-and-exec, namespace: {ns}}}
rules:
{GRANT_AND_EXEC}---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {prefix}-grantor-grants, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {prefix}-grant-and-exec}}
subjects: [{{kind: ServiceAccount, name: {name}, namespace: {home}}}]
""")
    return f"system:serviceaccount:{home}:{name}"


def dry_run(cluster: Cluster, obj: dict[str, Any], *as_user: str) -> subprocess.CompletedProcess[str]:
    """`kubectl create --dry-run=server`: the whole validation and admission, nothing stored."""
    args = [f"--as={u}" for u in as_user]
    return cluster.kubectl(*args, "create", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False)
