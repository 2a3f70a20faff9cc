"""`podssh doctor`: checks an installation from a user's machine, one line per finding.

Run on a laptop after installing, when logins fail: it asks the API server (with the user's own
kubeconfig) whether everything the gateway depends on is there, and says what to do when it is
not. Each check is a small function returning Results; `run` yields them in order, so the CLI
prints each line as soon as it is known (the reachability probe may take seconds).

Nothing here writes to the cluster: the SubjectAccessReviews of the RBAC check are questions,
not objects. Reads that the user may not make give WARN (the check could not be made), not FAIL.
The host keys are parsed by a function the composition root passes in (this package may not
import the SSH layer).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sshserver.grants.access import Grant, object_ref, snapshot_from_objects
from sshserver.grants.certificates import CertificateError, is_certificate, parse_user_certificate
from sshserver.grants.keys import CERT_SUFFIX, InvalidKeyError, fingerprint, parse_public_key
from sshserver.grants.text import printable
from sshserver.kube.client import TRANSPORT_ERRORS, KubeClient, unreachable

from . import GROUP, PLURAL, SESSION_PLURAL, VERSION
from .manifests import read_keys

EXEC_PROTOCOL = "v5.channel.k8s.io"
MIN_KUBERNETES = (1, 30)  # the first release whose API server speaks EXEC_PROTOCOL
INSTALL_FIX = "kubectl apply -k manifests/ (Helm: helm upgrade --install podssh charts/podssh)"
GRANT_FIX = "podssh grant --user NAME --key FILE -n NAMESPACE -l LABELS | kubectl apply -f -"


class Status(StrEnum):
    OK = "OK"
    WARN = "WARN"  # could not be checked, or works with a limitation
    FAIL = "FAIL"
    SKIP = "SKIP"  # not asked for (no --address, no --key) and nothing to say


@dataclass(frozen=True)
class Result:
    status: Status
    what: str
    why: str = ""  # for OK and SKIP: a detail
    fix: str = ""

    def line(self) -> str:
        """One line for the terminal; its text comes partly from the cluster (API messages,
        conditions, what listens at --address), so control characters are replaced."""
        text = f"{self.status.value:<4} {self.what}"
        if self.why:
            text += f": {self.why}"
        if self.fix:
            text += f" — fix: {self.fix}"
        return printable(text)


@dataclass(frozen=True)
class Install:
    """Where podssh is installed and the names of its objects. `name` is what manifests/ calls
    them (podssh) or, with Helm, the release's full name; the other names derive from it."""

    namespace: str = "podssh-system"
    name: str = "podssh"
    service_account: str | None = None  # default: `name`
    secret: str | None = None  # default: NAME-hostkeys

    @property
    def account(self) -> str:
        return self.service_account or self.name

    @property
    def hostkey_secret(self) -> str:
        return self.secret or f"{self.name}-hostkeys"

    @property
    def policies(self) -> tuple[str, str]:
        return f"{self.name}-grantor-holds-exec", f"{self.name}-sessions-written-by-gateway"


@dataclass(frozen=True)
class Right:
    """One thing the gateway's ServiceAccount must be allowed (manifests/rbac.yaml grants it)."""

    verb: str
    resource: str
    group: str = ""
    subresource: str = ""
    namespace: str = ""  # "" for every namespace (a ClusterRole's binding)
    name: str = ""  # a resourceName: the one Secret
    role: str = ""  # what grants it, for the hint

    def text(self) -> str:
        what = f"{self.resource}.{self.group}" if self.group else self.resource  # as kubectl names it
        if self.subresource:
            what += f"/{self.subresource}"
        if self.name:
            what += f" {self.name}"
        return f"{self.verb} {what} " + (f"in {self.namespace}" if self.namespace else "(all namespaces)")


def gateway_rights(install: Install) -> list[Right]:
    """What the gateway needs, as manifests/rbac.yaml grants it (a unit test compares the two).
    The optional components (debug containers, impersonation) are not asked for."""
    cluster = f"ClusterRole {install.name}-gateway"
    rights = [Right(v, "pods", role=cluster) for v in ("get", "list", "watch")]
    rights += [Right(v, "pods", subresource=s, role=cluster)
               for s in ("exec", "portforward") for v in ("get", "create")]
    rights += [Right("get", r, group="apps", role=cluster)
               for r in ("deployments", "statefulsets", "daemonsets", "replicasets")]
    rights.append(Right("get", "jobs", group="batch", role=cluster))
    rights += [Right(v, PLURAL, group=GROUP, role=cluster) for v in ("get", "list", "watch")]
    rights.append(Right("patch", PLURAL, group=GROUP, subresource="status", role=cluster))
    rights += [Right(v, SESSION_PLURAL, group=GROUP, role=cluster)
               for v in ("get", "list", "watch", "create", "patch", "delete", "publish")]
    rights += [Right(v, "events", role=cluster) for v in ("create", "patch")]
    ns = install.namespace
    rights += [Right(v, "secrets", namespace=ns, name=install.hostkey_secret, role=f"Role {install.name}-hostkeys")
               for v in ("get", "update")]
    rights += [Right(v, "leases", group="coordination.k8s.io", namespace=ns, role=f"Role {install.name}-replica-leases")
               for v in ("get", "list", "create", "patch", "delete")]
    return rights


class Cluster:
    """The reads (and SubjectAccessReviews) the checks make, as plain JSON, each bounded by
    `timeout`: plain JSON so that a partial object (a CRD without status) is no client-side error."""

    def __init__(self, kube: KubeClient, timeout: float = 10.0) -> None:
        self.kube = kube
        self.options: dict[str, Any] = {"_preload_content": False, "_request_timeout": timeout}

    def _json(self, response: Any) -> dict[str, Any]:
        return json.loads(response.data or b"{}")

    def version(self) -> dict[str, Any]:
        return self._json(client.VersionApi(self.kube.api_client).get_code(**self.options))

    def crd(self, name: str) -> dict[str, Any]:
        api = client.ApiextensionsV1Api(self.kube.api_client)
        return self._json(api.read_custom_resource_definition(name, **self.options))

    def policy(self, name: str) -> dict[str, Any]:
        api = client.AdmissionregistrationV1Api(self.kube.api_client)
        return self._json(api.read_validating_admission_policy(name, **self.options))

    def policy_binding(self, name: str) -> dict[str, Any]:
        api = client.AdmissionregistrationV1Api(self.kube.api_client)
        return self._json(api.read_validating_admission_policy_binding(name, **self.options))

    def review(self, user: str, groups: list[str], attributes: dict[str, str]) -> dict[str, Any]:
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": user, "groups": groups, "resourceAttributes": attributes}}
        api = client.AuthorizationV1Api(self.kube.api_client)
        return self._json(api.create_subject_access_review(body, **self.options))

    def secret(self, namespace: str, name: str) -> dict[str, Any]:
        return self._json(self.kube.core.read_namespaced_secret(name, namespace, **self.options))

    def service(self, namespace: str, name: str) -> dict[str, Any]:
        return self._json(self.kube.core.read_namespaced_service(name, namespace, **self.options))

    def nodes(self) -> list[dict[str, Any]]:
        return self._json(self.kube.core.list_node(**self.options)).get("items") or []

    def sshaccesses(self) -> list[dict[str, Any]]:
        return self._json(self.kube.custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, **self.options)).get("items") or []


def _message(exc: ApiException) -> str:
    """The API server's own words (its Status body), else the HTTP status."""
    try:
        message = json.loads(exc.body or b"{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or f"{exc.status} {exc.reason}")[:300]


def _no_such_kind(exc: ApiException) -> bool:
    """A 404 for the resource type itself (an API the server does not serve), not for one object."""
    try:
        details = json.loads(exc.body or b"{}").get("details") or {}
    except (ValueError, AttributeError):
        details = {}
    return exc.status == 404 and not details.get("name")


def _cannot_look(what: str, exc: ApiException) -> Result | None:
    """401/403 on the doctor's own read: the check could not be made, which is no finding."""
    if exc.status in (401, 403):
        return Result(Status.WARN, what, f"cannot check ({_message(exc)})",
                      "run as a user who may read it, e.g. a cluster administrator")
    return None


# 1. The CRDs ---------------------------------------------------------------------------------


def check_crd(cluster: Cluster, plural: str) -> Result:
    name = f"{plural}.{GROUP}"
    what = f"CRD {name}"
    try:
        crd = cluster.crd(name)
    except ApiException as exc:
        if exc.status == 404:
            return Result(Status.FAIL, what, "not installed", INSTALL_FIX)
        return _cannot_look(what, exc) or Result(Status.FAIL, what, _message(exc))
    versions = (crd.get("spec") or {}).get("versions") or []
    served = [v.get("name") for v in versions if v.get("served")]
    if VERSION not in served:
        return Result(Status.FAIL, what, f"serves {', '.join(map(str, served)) or 'no version'}, not {VERSION} "
                      "(the version this podssh uses)", f"install the CRD of this podssh version: {INSTALL_FIX}")
    conditions = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions") or []}
    established = conditions.get("Established") or {}
    if established.get("status") != "True":
        why = established.get("message") or "not established"
        return Result(Status.FAIL, what, f"not established: {why}",
                      f"kubectl get crd {name} -o yaml (status.conditions)")
    return Result(Status.OK, what, f"serves {GROUP}/{VERSION}")


# 2. The admission policies ---------------------------------------------------------------------


def check_policy(cluster: Cluster, name: str) -> Result:
    what = f"admission policy {name}"
    try:
        cluster.policy(name)
        binding = cluster.policy_binding(name)
    except ApiException as exc:
        if _no_such_kind(exc):
            return Result(Status.FAIL, what, "the API server does not serve admissionregistration.k8s.io/v1 "
                          "ValidatingAdmissionPolicies", f"Kubernetes {MIN_KUBERNETES[0]}.{MIN_KUBERNETES[1]} or later")
        if exc.status == 404:
            return Result(Status.FAIL, what, "the policy or its binding is not installed: nothing stops users "
                          "from granting access they do not hold themselves", INSTALL_FIX)
        return _cannot_look(what, exc) or Result(Status.FAIL, what, _message(exc))
    spec = binding.get("spec") or {}
    if spec.get("policyName") != name or "Deny" not in (spec.get("validationActions") or []):
        return Result(Status.FAIL, what, f"its binding does not deny (policyName {spec.get('policyName')!r}, "
                      f"validationActions {spec.get('validationActions')})", INSTALL_FIX)
    return Result(Status.OK, what, "installed and bound (Deny)")


# 3. The gateway's RBAC ---------------------------------------------------------------------------


def check_rbac(cluster: Cluster, install: Install) -> list[Result]:
    """One SubjectAccessReview per right, for the ServiceAccount and the groups its token carries."""
    ns, account = install.namespace, install.account
    what = f"gateway RBAC (serviceaccount {ns}/{account})"
    user = f"system:serviceaccount:{ns}:{account}"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]
    missing = []
    rights = gateway_rights(install)
    for right in rights:
        attributes = {"verb": right.verb, "resource": right.resource, "group": right.group}
        attributes |= {k: v for k, v in (("subresource", right.subresource), ("namespace", right.namespace),
                                         ("name", right.name)) if v}
        try:
            review = cluster.review(user, groups, attributes)
        except ApiException as exc:
            return [_cannot_look(what, exc) or Result(Status.FAIL, what, _message(exc))]
        if not (review.get("status") or {}).get("allowed"):
            missing.append(right)
    if not missing:
        return [Result(Status.OK, what, f"holds the {len(rights)} rights the gateway needs")]
    return [Result(Status.FAIL, what, f"may not {r.text()}", f"apply {r.role} and its binding: {INSTALL_FIX}")
            for r in missing]


# 4. The host keys --------------------------------------------------------------------------------

HostKeyReader = Callable[[str, str], list[str]]  # (namespace, name) -> "type SHA256:..." lines; ValueError


def check_host_keys(cluster: Cluster, install: Install, read_keys: HostKeyReader) -> Result:
    ns, name = install.namespace, install.hostkey_secret
    what = f"host keys (secret {ns}/{name})"
    try:
        cluster.secret(ns, name)
    except ApiException as exc:
        if exc.status == 404:
            return Result(Status.FAIL, what, "no such Secret",
                          "kubectl apply -k manifests/keep/ (an empty Secret: the first gateway replica fills it in)")
        return _cannot_look(what, exc) or Result(Status.FAIL, what, _message(exc))
    try:
        keys = read_keys(ns, name)
    except ValueError as exc:
        return Result(Status.FAIL, what, str(exc),
                      f"start the gateway once (kubectl -n {ns} rollout status deploy/{install.name}): it generates "
                      f"the keys it lacks; for broken ones see README, Host keys (rotating)")
    return Result(Status.OK, what, ", ".join(keys))


# 5. The exec protocol ----------------------------------------------------------------------------


def server_release(version: Mapping[str, Any]) -> tuple[int, int] | None:
    """(major, minor) from /version: gitVersion v1.33.2, else major/minor ("30+" on some clouds)."""
    found = re.match(r"v?(\d+)\.(\d+)", str(version.get("gitVersion") or ""))
    if found:
        return int(found[1]), int(found[2])
    major, minor = (re.match(r"\d+", str(version.get(k) or "")) for k in ("major", "minor"))
    return (int(major[0]), int(minor[0])) if major and minor else None


def check_exec_protocol(version: Mapping[str, Any]) -> Result:
    what = f"exec protocol {EXEC_PROTOCOL}"
    release = server_release(version)
    shown = version.get("gitVersion") or f"{version.get('major')}.{version.get('minor')}"
    if release is None:
        return Result(Status.WARN, what, f"cannot tell the API server's release from its version {shown!r}")
    if release < MIN_KUBERNETES:
        return Result(Status.FAIL, what, f"the API server is {shown}: it speaks only v4, so commands that read "
                      "stdin to its end never see the end (scp, cat > file)",
                      f"Kubernetes {MIN_KUBERNETES[0]}.{MIN_KUBERNETES[1]} or later")
    return Result(Status.OK, what, f"the API server is {shown}")


# 6. Reachability ---------------------------------------------------------------------------------


def ssh_version_line(host: str, port: int, timeout: float) -> str:
    """The server's SSH version line, its control characters replaced (whatever listens at the
    address chose its bytes, and they reach the terminal); OSError (TimeoutError included) when
    it does not come in time. RFC 4253 lets a server send other lines first; a few are read past."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        data = b""
        while data.count(b"\n") < 20 and len(data) < 8192:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(1024)
            if not chunk:
                raise OSError("the connection closed without an SSH version line")
            data += chunk
            for line in data.split(b"\n")[:-1]:
                if line.startswith(b"SSH-"):
                    return printable(line.rstrip(b"\r").decode("ascii", "replace"))
    raise OSError("no SSH version line")


def check_address(host: str, port: int, timeout: float) -> Result:
    what = f"gateway at {host}:{port}"
    try:
        line = ssh_version_line(host, port, timeout)
    except TimeoutError:
        return Result(Status.FAIL, what, f"no SSH version line within {timeout:g}s",
                      "check the address, firewalls, and that the gateway pods are Ready")
    except OSError as exc:
        return Result(Status.FAIL, what, exc.strerror or str(exc),
                      "check the address, firewalls, and that the gateway pods are Ready")
    return Result(Status.OK, what, f"answers {line[:100]}")


def _node_address(cluster: Cluster) -> str | None:
    """A node's ExternalIP, else its InternalIP; None when nodes cannot be read."""
    try:
        nodes = cluster.nodes()
    except ApiException:
        return None
    for kind in ("ExternalIP", "InternalIP"):
        for node in nodes:
            for address in (node.get("status") or {}).get("addresses") or []:
                if address.get("type") == kind and address.get("address"):
                    return str(address["address"])
    return None


def check_service(cluster: Cluster, install: Install) -> Result:
    """Without --address: the address clients would use, from the gateway's Service. Not connected to
    (the laptop may not be where clients are); the line says how to try it."""
    ns, name = install.namespace, install.name
    what = f"gateway Service {ns}/{name}"
    try:
        service = cluster.service(ns, name)
    except ApiException as exc:
        if exc.status == 404:
            return Result(Status.SKIP, "gateway reachability", f"no --address and no Service {ns}/{name}")
        return _cannot_look(what, exc) or Result(Status.FAIL, what, _message(exc))
    spec = service.get("spec") or {}
    ports = spec.get("ports") or []
    port = next((p for p in ports if p.get("name") == "ssh"), ports[0] if ports else {})
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    address = next((i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")), None)
    if address and port.get("port"):
        where, how = f"{address}:{port['port']}", "its load balancer"
    elif port.get("nodePort"):
        node = _node_address(cluster)
        where, how = f"{node or 'NODE'}:{port['nodePort']}", "its NodePort on any node"
    else:
        return Result(Status.WARN, what, f"type {spec.get('type', 'ClusterIP')} without an external address: clients "
                      "outside the cluster cannot reach it",
                      "a LoadBalancer or NodePort Service (Helm: --set service.type=LoadBalancer)")
    return Result(Status.OK, what, f"clients would use {where} ({how}); not connected: try podssh doctor "
                  f"--address {where}")


# 7. A key's grants -------------------------------------------------------------------------------


def _describe(grant: Grant) -> str:
    allowed = [k for k in ("shell", "exec", "sftp") if getattr(grant.allow, k)]
    allowed += [f"port {p}" for p in sorted(grant.allow.port_forward)]
    return f"{grant.ref} (user {grant.user}, pods {grant.selector}, {'+'.join(allowed) or 'nothing'})"


def _key_identity(text: str) -> tuple[str, Any]:
    """(fingerprint, certificate or None) of a public key or user certificate line; ValueError."""
    fields = text.split()
    if len(fields) >= 2 and fields[0].endswith(CERT_SUFFIX):
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except ValueError:
            raise ValueError("the certificate's data is not base64") from None
        if not is_certificate(blob):
            raise ValueError("not an OpenSSH certificate")
        try:
            return fingerprint(blob), parse_user_certificate(blob)
        except CertificateError as exc:
            raise ValueError(str(exc)) from None
    try:
        return parse_public_key(text).fingerprint, None
    except InvalidKeyError as exc:
        raise ValueError(str(exc)) from None


def check_key(cluster: Cluster, path: Path) -> Result:
    """Parses the cluster's SSHAccess objects as the gateway does and asks its snapshot."""
    try:
        line = read_keys([path])[0]
        fp, certificate = _key_identity(line)
    except ValueError as exc:
        return Result(Status.FAIL, f"key {path}", str(exc), "pass an OpenSSH public key (.pub) or certificate file")
    what = f"key {fp}"
    try:
        objects = cluster.sshaccesses()
    except ApiException as exc:
        return _cannot_look(what, exc) or Result(Status.FAIL, what, _message(exc))
    snapshot, errors = snapshot_from_objects(objects)
    grants = (snapshot.grants_for_certificate(certificate) if certificate is not None
              else snapshot.grants_for_fingerprint(fp))
    if grants:
        namespaces = sorted({g.namespace for g in grants})
        return Result(Status.OK, what, f"{len(grants)} grant(s) in force, namespace(s) {', '.join(namespaces)}: "
                      + "; ".join(_describe(g) for g in grants))
    notes = [f"{g.ref} lists it but is not in force now" for g in snapshot.grants
             if certificate is None and any(k.fingerprint == fp for k in g.keys)]
    data = line.split()[1] if len(line.split()) > 1 else line
    notes += [f"{object_ref(o)} lists it but is invalid ({errors[object_ref(o)]})" for o in objects
              if object_ref(o) in errors and any(data in str(k) for k in _listed_keys(o))]
    why = "no grant in force for this key" + (f" ({'; '.join(notes)})" if notes else "")
    return Result(Status.FAIL, what, why, GRANT_FIX)


def _listed_keys(obj: Mapping[str, Any]) -> list[Any]:
    spec = obj.get("spec")
    keys = spec.get("publicKeys") if isinstance(spec, Mapping) else None
    return keys if isinstance(keys, list) else []


# The run -----------------------------------------------------------------------------------------


def config_failure(exc: BaseException, kubeconfig: str | None) -> Result:
    """The one line for a kubeconfig that cannot be loaded (missing, malformed, unknown context)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    where = f"{kubeconfig}: " if kubeconfig else ""
    return Result(Status.FAIL, "Kubernetes configuration", f"{where}{text}",
                  "pass --kubeconfig FILE (and --context NAME), or set KUBECONFIG")


def api_failure(exc: BaseException) -> Result:
    """The one line for an API server that cannot be reached, refuses our credentials, or answers
    what no API server would (a proxy's HTML page, say)."""
    what, hint = "Kubernetes API server", "check --kubeconfig and --context (kubectl cluster-info)"
    if isinstance(exc, ApiException):
        return Result(Status.FAIL, what, f"refused the request ({_message(exc)})",
                      "check your credentials: kubectl --context CONTEXT get --raw /version")
    if isinstance(exc, TRANSPORT_ERRORS):
        return Result(Status.FAIL, what, str(unreachable(exc)), hint)
    return Result(Status.FAIL, what, f"unexpected answer to /version ({type(exc).__name__}: {str(exc)[:200]})", hint)


def _guarded(what: str, check: Callable[[], Result | list[Result]]) -> list[Result]:
    """A check that meets an unreachable API server, or an answer it did not expect, fails with one
    line instead of a traceback; the next checks still run."""
    try:
        found = check()
    except TRANSPORT_ERRORS as exc:
        return [Result(Status.FAIL, what, str(unreachable(exc)))]
    except ApiException as exc:
        return [Result(Status.FAIL, what, _message(exc))]
    except Exception as exc:  # a diagnostic tool must report, never crash
        return [Result(Status.FAIL, what, f"unexpected {type(exc).__name__}: {str(exc)[:200]}")]
    return found if isinstance(found, list) else [found]


def run(cluster: Cluster, install: Install, host_keys: HostKeyReader, address: tuple[str, int] | None = None,
        key: Path | None = None, probe_timeout: float = 5.0) -> Iterator[Result]:
    """Every check in order. The API server's version comes first: when it cannot be had (no route,
    refused credentials, not an API server) that one FAIL is the whole report, since every other
    check would say the same."""
    try:
        version = cluster.version()
        if not isinstance(version, dict):
            raise ValueError("/version is not a JSON object")
    except Exception as exc:  # whatever the answer, one line (see api_failure)
        yield api_failure(exc)
        return
    for plural in (PLURAL, SESSION_PLURAL):
        yield from _guarded(f"CRD {plural}.{GROUP}", partial(check_crd, cluster, plural))
    for policy in install.policies:
        yield from _guarded(f"admission policy {policy}", partial(check_policy, cluster, policy))
    yield from _guarded("gateway RBAC", partial(check_rbac, cluster, install))
    yield from _guarded("host keys", partial(check_host_keys, cluster, install, host_keys))
    yield from _guarded(f"exec protocol {EXEC_PROTOCOL}", partial(check_exec_protocol, version))
    if address is not None:
        yield from _guarded(f"gateway at {address[0]}:{address[1]}",
                            partial(check_address, *address, timeout=probe_timeout))
    else:
        yield from _guarded("gateway reachability", partial(check_service, cluster, install))
    if key is not None:
        yield from _guarded(f"key {key}", partial(check_key, cluster, key))


def parse_address(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT, [IPv6] or [IPv6]:PORT; port 22 when none is given. ValueError."""
    found = re.fullmatch(r"\[([0-9A-Fa-f:.%\w-]+)\](?::(\d+))?|([^:\[\]\s]+)(?::(\d+))?", text.strip())
    if not found:
        raise ValueError(f"expected HOST[:PORT], got {text!r}")
    host = found[1] or found[3]
    port = int(found[2] or found[4] or 22)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, port
