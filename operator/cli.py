"""The `podssh` command line: the composition root that wires control plane and data plane."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sshserver.config.settings import GatewaySettings
from sshserver.observability.logevents import configure, event
from sshserver.version import version

from .completion import SHELLS
from .completion import script as completion_script
from .helpformat import DefaultsHelpFormatter

log = logging.getLogger("podssh")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _ns_name(text: str) -> tuple[str, str]:
    ns, sep, name = text.partition("/")
    if not sep or not ns or not name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, got {text!r}")
    return ns, name


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return int(text)


def _bool(text: str) -> bool:
    if text.lower() in ("true", "yes", "on", "1"):
        return True
    if text.lower() in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _default_replica() -> str:
    """The pod's name in a cluster (POD_NAME, from the downward API), else host and process."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def _session_object_flags(serve: argparse.ArgumentParser) -> None:
    add = serve.add_argument
    add("--session-objects", type=_bool, nargs="?", const=True, default=None, metavar="true|false",
        help="mirror live sessions as SSHSession objects (kubectl get sshsessions; kubectl delete ends one) "
             "and post SSHSessionStarted/Ended Events on target pods (default: true when watching the cluster; "
             "needs the cluster, so not with --access)")
    add("--replica", default=None, metavar="NAME",
        help="this replica's name on its SSHSession objects and its Lease (default: $POD_NAME, else HOST-PID)")
    add("--lease-namespace", default=None, metavar="NAMESPACE",
        help="where the replicas' Leases live (default: $POD_NAMESPACE, else default)")


def _startups(text: str) -> tuple[int, int, int]:
    from sshserver.ssh.admission import Startups

    try:
        s = Startups.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return s.start, s.rate, s.full


def _cidrs(text: str) -> tuple[str, ...]:
    from sshserver.ssh.proxyprotocol import TrustedProxies

    try:
        proxies = TrustedProxies.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return tuple(str(n) for n in proxies.networks)


def _admission_flags(serve: argparse.ArgumentParser) -> None:
    """Limits against floods, as sshd's MaxStartups, PerSourceMaxStartups and MaxSessions."""
    d = GatewaySettings()
    add = serve.add_argument
    add("--max-startups", type=_startups, metavar="START:RATE:FULL",
        default=(d.startups_start, d.startups_rate, d.max_unauthenticated),
        help="unauthenticated connections: from START on refuse new ones with probability RATE%%, "
             f"rising to 100%% at FULL (default: {d.startups_start}:{d.startups_rate}:{d.max_unauthenticated})")
    add("--max-unauthenticated-per-source", type=_positive, default=d.max_unauthenticated_per_source,
        metavar="N", help="unauthenticated connections from one address (default: %(default)s)")
    add("--max-connections-per-source", type=_positive, default=d.max_connections_per_source,
        metavar="N", help="connections from one address (default: %(default)s)")
    add("--max-connections-per-key", type=_positive, default=d.max_connections_per_key, metavar="N",
        help="authenticated connections of one key or certificate (default: %(default)s)")
    add("--max-sessions", type=_positive, default=d.max_sessions, metavar="N",
        help="session channels per connection, as sshd's MaxSessions (default: %(default)s)")
    add("--max-channels", type=_positive, default=d.max_channels, metavar="N",
        help="channels per connection, ssh -L ones included (default: %(default)s)")
    add("--version-timeout", type=float, default=d.version_timeout, metavar="SECONDS",
        help="until the client's version line; the key exchange and login then have the rest of "
             "--login-grace-time (default: %(default)s)")
    add("--proxy-protocol", type=_cidrs, default=(), metavar="CIDR[,CIDR...]",
        help="connections from these networks must start with a PROXY protocol v1/v2 header, whose "
             "client address is then used; never parsed from other peers (default: off)")
    add("--proxy-timeout", type=float, default=d.proxy_timeout, metavar="SECONDS",
        help="for the PROXY header to arrive (default: %(default)s)")
    add("--max-proxy-pending", type=_positive, default=d.max_proxy_pending, metavar="N",
        help="connections from trusted proxies waiting for their PROXY header (default: %(default)s)")
    add("--max-proxy-pending-per-source", type=_positive, default=d.max_proxy_pending_per_source, metavar="N",
        help="... of them from one proxy address (default: %(default)s)")
    add("--window-budget", type=_positive, default=d.window_budget // (1024 * 1024), metavar="MIB",
        help="the large receive windows of all channels together; past it, channels keep the small "
             "window and run slower (default: %(default)s)")


def _address(text: str) -> tuple[str, int]:
    from .doctor import parse_address

    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _doctor_parser(sub_parser: Callable[..., argparse.ArgumentParser]) -> None:
    dr = sub_parser("doctor", help="check an installation from your machine: CRDs, admission policies, the "
                        "gateway's RBAC, host keys, the API server, reachability, a key's grants")
    _kube_flags(dr)
    dr.add_argument("--namespace", "-n", default="podssh-system",
                    help="where the gateway is installed (default: %(default)s)")
    dr.add_argument("--name", default="podssh",
                    help="the installation's object name: its ServiceAccount, Service, Secret NAME-hostkeys and "
                         "policies NAME-...; with Helm the release's full name (default: %(default)s)")
    dr.add_argument("--service-account", metavar="NAME", help="the gateway's ServiceAccount (default: --name)")
    dr.add_argument("--secret", metavar="NAME", help="the host-key Secret (default: NAME-hostkeys)")
    dr.add_argument("--address", type=_address, metavar="HOST[:PORT]",
                    help="connect to the gateway here and read its SSH version line (port 22 when omitted)")
    dr.add_argument("--key", type=Path, metavar="FILE",
                    help="a public key (or certificate) file: which grants in force it has")
    dr.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                    help="for the --address probe (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podssh", description="SSH into Kubernetes pods.",
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"podssh {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub_parser = functools.partial(sub.add_parser, formatter_class=DefaultsHelpFormatter)
    serve = sub_parser("serve", help="run the SSH gateway")
    serve.add_argument("--listen", type=_host_port, default=("0.0.0.0", 2222), metavar="HOST:PORT",
                       help="where the SSH server listens (default: 0.0.0.0:2222)")
    _kube_flags(serve)
    serve.add_argument("--access", type=Path, metavar="FILE",
                       help="serve the SSHAccess grants in this YAML file instead of watching the cluster "
                            "(default: watch the cluster)")
    serve.add_argument("--resync-interval", type=float, default=30.0, metavar="SECONDS",
                       help="how often the full list of SSHAccess objects replaces the watched view")
    keys = serve.add_mutually_exclusive_group()
    keys.add_argument("--host-key-dir", type=Path, metavar="DIR",
                      help="directory of ssh_host_{ed25519,ecdsa}_key, generated when absent "
                           "(default: /var/lib/podssh/hostkeys)")
    keys.add_argument("--host-key-secret", type=_ns_name, metavar="NAMESPACE/NAME",
                      help="Secret holding the host keys, created when absent (default: none, keys from "
                           "--host-key-dir)")
    serve.add_argument("--banner", metavar="TEXT", help="text shown to clients before authentication (default: none)")
    serve.add_argument("--banner-file", type=Path, metavar="FILE",
                       help="file whose text is shown before authentication, instead of --banner (default: none)")
    serve.add_argument("--metrics", type=_host_port, metavar="HOST:PORT",
                       help="serve /metrics, /healthz and /readyz on this address (default: off)")
    serve.add_argument("--audit-log", default="-", metavar="FILE",
                       help="where the audit trail (JSON lines) goes; - for stdout (default: -)")
    serve.add_argument("--record-dir", type=Path, metavar="DIR",
                       help="record interactive sessions here as asciicast v2 files (default: off)")
    serve.add_argument("--impersonate", action="store_true",
                       help="exec as the grant's user (Impersonate-User), so cluster RBAC decides (default: off, "
                            "exec as the gateway's service account)")
    serve.add_argument("--max-auth-tries", type=int, default=6, metavar="N",
                       help="authentication attempts per connection, as sshd's MaxAuthTries")
    serve.add_argument("--login-grace-time", type=float, default=30.0, metavar="SECONDS",
                       help="from connecting to logged in, as sshd's LoginGraceTime")
    serve.add_argument("--max-unauthenticated", type=_positive, metavar="N",
                       help="the FULL of --max-startups (kept for compatibility; default: that of --max-startups)")
    _admission_flags(serve)
    _session_object_flags(serve)
    serve.add_argument("--drain-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="after SIGTERM, how long live sessions may go on before they are ended")
    serve.add_argument("--shutdown-delay", type=float, default=0.0, metavar="SECONDS",
                       help="after SIGTERM, keep accepting (and report not ready) this long first")
    serve.add_argument("--no-hang-up", dest="hang_up", action="store_false",
                       help="leave running what a session started in the pod when it ends other than by its "
                            "command's exit (by default they get SIGHUP, one exec per pod for the sessions "
                            "dropped together)")
    serve.add_argument("--hang-up", dest="hang_up", action="store_true", default=True,
                       help="hang up what a session started when it ends (the default; kept for compatibility)")
    serve.add_argument("--revoked-keys", type=Path, metavar="FILE",
                       help="public keys (one per line) or an OpenSSH KRL (ssh-keygen -k) that may not log in; "
                            "re-read when it changes (default: none)")
    serve.add_argument("--no-pod-cache", dest="pod_cache", action="store_false",
                       help="resolve every target with API calls instead of watching the pods of the granted "
                            "namespaces (the watch needs the `watch` verb on pods; default: watch them)")
    serve.add_argument("--api-keepalive", type=float, default=20.0, metavar="SECONDS",
                       help="ping a session's API server stream after this many silent seconds (0: off)")
    serve.add_argument("--api-keepalive-timeout", type=float, default=45.0, metavar="SECONDS",
                       help="end a session whose API server stream stayed silent this long, pings included")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                       help="the least severe log lines written")
    gr = sub_parser("grant", help="print an SSHAccess for `kubectl apply -f -`")
    gr.add_argument("--user", required=True, help="who gets access (audit trail)")
    gr.add_argument("--key", required=True, action="append", type=Path, metavar="FILE",
                    help="public key file (repeatable)")
    gr.add_argument("--namespace", "-n", required=True, help="the namespace of the pods and of the SSHAccess")
    gr.add_argument("--selector", "-l", required=True, help="pod labels, key=value[,key=value]")
    gr.add_argument("--name", help="object name (default: USER-ssh)")
    gr.add_argument("--expires", help="validity from now, e.g. 8h, 30m (default: no expiry)")
    gr.add_argument("--allow", default="shell,exec", help="shell,exec,sftp (default: shell,exec)")
    gr.add_argument("--port-forward", type=int, action="append", metavar="PORT",
                    help="allow ssh -L to PORT (repeatable; default: none)")
    sc = sub_parser("ssh-config", help="print an ~/.ssh/config block for the gateway")
    sc.add_argument("--host", required=True, help="the gateway's address")
    sc.add_argument("--port", type=int, default=22, help="the gateway's port")
    sc.add_argument("--alias", default="podssh", help="the Host name of the block, and its HostKeyAlias")
    sc.add_argument("--identity", metavar="FILE", help="private key file to use (default: ssh's own choice)")
    sc.add_argument("--known-hosts-file", default="~/.ssh/podssh_known_hosts", metavar="FILE",
                    help="where `podssh known-hosts` output was saved (default: %(default)s)")
    sc.add_argument("--target", action="append", default=[], metavar="TARGET",
                    help="a target (NAMESPACE/POD[:CONTAINER] or NAMESPACE/KIND/NAME) that gets a Host block of "
                         "its own with User set, for scp and rsync (repeatable; default: none)")
    sc.add_argument("--name", action="append", default=[], metavar="HOST",
                    help="the Host name of the --target at the same position (default: the target with '-' "
                         "for '/' and ':')")
    kh = sub_parser("known-hosts", help="print known_hosts lines for the gateway's host keys (from its Secret)")
    kh.add_argument("--host", required=True, help="the gateway's address, as clients reach it")
    kh.add_argument("--port", type=int, default=22, help="the gateway's port, as clients reach it")
    kh.add_argument("--alias", default="podssh", help="the HostKeyAlias of `podssh ssh-config` (default: podssh)")
    _kube_flags(kh)
    kh.add_argument("--secret", type=_ns_name, default=("podssh-system", "podssh-hostkeys"), metavar="NAMESPACE/NAME",
                    help="the Secret holding the host keys (default: podssh-system/podssh-hostkeys)")
    kh.add_argument("--ca", action="store_true",
                    help="print the @cert-authority line of the host CA (see host-cert) instead of the keys")
    hc = sub_parser("host-cert", help="sign the gateway's host keys with a host CA; stored in the Secret")
    hc.add_argument("--ca-key", required=True, type=Path, metavar="FILE",
                    help="the host CA's private key (OpenSSH format)")
    hc.add_argument("--principals", required=True, help="the host names clients use, NAME[,NAME]")
    hc.add_argument("--validity", default="8760h", help="how long the certificates are valid (default: 8760h)")
    _kube_flags(hc)
    hc.add_argument("--secret", type=_ns_name, default=("podssh-system", "podssh-hostkeys"), metavar="NAMESPACE/NAME",
                    help="the Secret holding the host keys (default: podssh-system/podssh-hostkeys)")
    _doctor_parser(sub_parser)
    op = sub_parser("operator", help="run only the control plane: watch SSHAccess, write status and Events")
    _kube_flags(op)
    op.add_argument("--resync-interval", type=float, default=30.0, metavar="SECONDS",
                    help="how often the full list of SSHAccess objects replaces the watched view")
    op.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                    help="the least severe log lines written")
    co = sub_parser("completion", help="print the shell completion script (bash: source it; zsh: save it as "
                                       "_podssh in a directory of $fpath)")
    co.add_argument("shell", choices=SHELLS, help="the shell")
    return parser


def _kube_flags(parser: argparse.ArgumentParser) -> None:
    """--kubeconfig and --context, the same on every subcommand that talks to the API server."""
    parser.add_argument("--kubeconfig", metavar="FILE",
                        help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    parser.add_argument("--context", metavar="NAME",
                        help="kubeconfig context (default: the kubeconfig's current context)")


def _fail(message: str) -> int:
    print(f"podssh: {message}", file=sys.stderr)
    return 2


def _load_kube(args: argparse.Namespace):
    import yaml
    from kubernetes.config import ConfigException

    from sshserver.kube.client import KubeClient

    try:
        return KubeClient.load(args.kubeconfig, args.context)
    except (ConfigException, OSError, TypeError, ValueError, yaml.YAMLError) as exc:
        text = " ".join(str(exc).split())  # YAML errors span lines
        raise SystemExit(_fail(f"cannot load Kubernetes configuration: {text}")) from None


def _api_failure(exc: BaseException) -> str:
    """One line for an API call of a CLI command that failed outside its own errors: the API
    server unreachable, or an HTTP status its code did not expect."""
    from kubernetes.client.exceptions import ApiException

    from sshserver.kube.client import unreachable

    if isinstance(exc, ApiException):
        return f"the Kubernetes API server refused: {exc.status} {exc.reason}"
    return str(unreachable(exc))


def _wait_for_signal(alive: Callable[[], bool]) -> bool:
    """Blocks until SIGTERM/SIGINT (True) or until `alive()` turns false (False)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if not alive():
            return False
    return True


def _host_keys_from_secret(kube: Any, namespace: str, name: str) -> list[Any]:
    """The host keys from their Secret; an unreachable API server is an ApiError (retried)."""
    from sshserver.kube.client import TRANSPORT_ERRORS, unreachable
    from sshserver.ssh import hostkeys

    try:
        return hostkeys.from_secret(kube.core, namespace, name)
    except TRANSPORT_ERRORS as exc:
        raise unreachable(exc) from None


def serve(args: argparse.Namespace) -> int:
    # Imported here so `podssh --help` stays fast (paramiko and kubernetes are slow to import).
    from sshserver.gateway.core import Gateway
    from sshserver.grants.access import AccessStore
    from sshserver.grants.accessfile import load_access_file
    from sshserver.grants.revocation import RevocationError, RevokedKeysFile
    from sshserver.kube.client import retry_while_unavailable
    from sshserver.kube.podcache import PodCache
    from sshserver.observability.audit import AuditTrail
    from sshserver.observability.metrics import Metrics
    from sshserver.observability.monitoring import MonitoringServer
    from sshserver.ssh import hostkeys

    from .controlplane import ControlPlane, ControlPlaneError

    configure(args.log_level)
    banner = args.banner
    if args.banner_file:
        try:
            banner = args.banner_file.read_text()
        except OSError as exc:
            return _fail(f"cannot read banner file: {exc}")
    try:
        revoked = RevokedKeysFile(args.revoked_keys) if args.revoked_keys else None
    except RevocationError as exc:
        return _fail(str(exc))
    kube = _load_kube(args)
    metrics = Metrics()
    live: dict[str, Any] = {}  # the gateway and its accept thread, once they exist

    def ready() -> tuple[bool, str]:
        gateway, acceptor = live.get("gateway"), live.get("acceptor")
        if gateway is None or acceptor is None:
            return False, "starting: waiting for the Kubernetes API server"
        if not store.current.populated:
            return False, "access snapshot not populated yet"
        if control is not None and not control.healthy:
            return False, "the control plane stopped"
        if not acceptor.is_alive() or gateway.draining:
            return False, "not accepting connections"
        return True, "ready"

    # Up first: /healthz must answer while the API server is still unreachable, or the kubelet's
    # liveness probe would restart a replica that is only waiting.
    monitoring = None
    if args.metrics:
        try:
            monitoring = MonitoringServer(*args.metrics, metrics.registry, ready)
        except OSError as exc:
            return _fail(f"cannot listen on {args.metrics[0]}:{args.metrics[1]}: {exc.strerror or exc}")
        monitoring.start()
    control = None
    if args.session_objects and args.access is not None:
        return _fail("--session-objects needs the cluster's SSHAccess objects (not --access)")
    session_objects = None
    if args.access is None and args.session_objects is not False:
        from .sessionbodies import dns_label
        from .sessionobjects import SessionObjects

        session_objects = SessionObjects(
            kube, dns_label(args.replica or _default_replica(), 63 - len("podssh-gateway-"), "gateway"),
            args.lease_namespace or os.environ.get("POD_NAMESPACE") or "default")
        session_objects.on_call = metrics.track_session_objects(lambda: session_objects.pending)
    if args.access is not None:
        try:
            store = AccessStore(load_access_file(args.access))
        except ValueError as exc:
            return _fail(str(exc))
    else:
        store = AccessStore()
        control = ControlPlane(kube, store, resync_interval=args.resync_interval, session_objects=session_objects)
        try:
            control.start()  # waits (not ready) while the API server cannot be reached
        except ControlPlaneError as exc:
            return _fail(str(exc))
    try:
        if args.host_key_secret:
            keys = retry_while_unavailable(
                "host keys", lambda: _host_keys_from_secret(kube, *args.host_key_secret), log=log)
        else:
            keys = hostkeys.from_directory(args.host_key_dir or Path("/var/lib/podssh/hostkeys"))
    except (hostkeys.HostKeyError, OSError) as exc:
        return _fail(str(exc))
    settings = GatewaySettings(
        listen_host=args.listen[0], listen_port=args.listen[1], banner=banner,
        max_auth_tries=args.max_auth_tries, login_grace_time=args.login_grace_time,
        max_unauthenticated=args.max_unauthenticated or args.max_startups[2],
        startups_start=args.max_startups[0], startups_rate=args.max_startups[1],
        max_unauthenticated_per_source=args.max_unauthenticated_per_source,
        max_connections_per_source=args.max_connections_per_source,
        max_connections_per_key=args.max_connections_per_key, max_sessions=args.max_sessions,
        max_channels=args.max_channels, version_timeout=args.version_timeout,
        proxy_protocol=args.proxy_protocol, proxy_timeout=args.proxy_timeout, impersonate=args.impersonate,
        max_proxy_pending=args.max_proxy_pending, max_proxy_pending_per_source=args.max_proxy_pending_per_source,
        window_budget=args.window_budget * 1024 * 1024,
        drain_timeout=args.drain_timeout, shutdown_delay=args.shutdown_delay, record_dir=args.record_dir,
        hang_up=args.hang_up, revoked_keys=revoked, api_keepalive=args.api_keepalive,
        api_keepalive_timeout=args.api_keepalive_timeout,
    )
    try:
        audit = AuditTrail.open(args.audit_log)
    except OSError as exc:
        return _fail(f"cannot open audit log {args.audit_log}: {exc.strerror or exc}")
    pod_cache = PodCache(kube) if args.pod_cache else None
    gateway = Gateway(settings, store, kube, keys, metrics=metrics, audit=audit, pod_cache=pod_cache)
    if control is not None and control.session_events is not None:
        gateway.observers.append(control.session_events)
    if session_objects is not None:
        gateway.observers.append(session_objects)
        session_objects.on_deleted = lambda session_id, namespace, name: _end_deleted(
            gateway, session_id, namespace, name)
    try:
        gateway.bind()
    except OSError as exc:
        return _fail(f"cannot listen on {args.listen[0]}:{args.listen[1]}: {exc.strerror or exc}")
    acceptor = threading.Thread(target=gateway.serve_forever, name="accept", daemon=True)
    acceptor.start()
    live.update(gateway=gateway, acceptor=acceptor)
    event(log, "ready", grants=len(store.current.grants), source="file" if control is None else "cluster")
    if not _wait_for_signal(acceptor.is_alive):
        return _fail("the accept loop stopped unexpectedly")
    gateway.shutdown()
    if control is not None:
        control.stop()
    if monitoring is not None:
        monitoring.stop()
    event(log, "stopped")
    return 0


def _end_deleted(gateway: Any, session_id: str, namespace: str, name: str) -> None:
    """An SSHSession was deleted through the API (kopf's thread): its session ends, with a line
    to the user, an audit record (session_end_requested, then session_end with reason deleted)."""
    from sshserver.observability.observer import EndReason

    ended = gateway.end_session(session_id, EndReason.DELETED,
                                f"this session was ended through the Kubernetes API (sshsession {namespace}/{name} "
                                "deleted)", via="kubernetes-api", object=f"{namespace}/{name}")
    event(log, "session_deletion_received", session=session_id, object=f"{namespace}/{name}", ended=ended)


def known_hosts(args: argparse.Namespace) -> int:
    """Prints the gateway's host keys as known_hosts lines: pinned before the first login."""
    from kubernetes.client.exceptions import ApiException

    from sshserver.kube.client import TRANSPORT_ERRORS
    from sshserver.ssh import hostkeys
    from sshserver.ssh.hostcerts import HostCertError, cert_authority_line

    kube = _load_kube(args)
    try:
        if args.ca:
            ca = hostkeys.read_ca(kube.core, *args.secret)
            lines = [cert_authority_line(ca, host=args.host, port=args.port, alias=args.alias)]
        else:
            keys = hostkeys.read_secret(kube.core, *args.secret)
            lines = hostkeys.known_hosts_lines(keys, host=args.host, port=args.port, alias=args.alias)
    except (hostkeys.HostKeyError, HostCertError) as exc:
        return _fail(str(exc))
    except (ApiException, *TRANSPORT_ERRORS) as exc:
        return _fail(_api_failure(exc))
    print("\n".join(lines))
    return 0


def host_cert(args: argparse.Namespace) -> int:
    """Signs the host keys in the Secret with the operator's CA key; gateways present the
    certificates after their next start (kubectl -n podssh-system rollout restart deploy/podssh)."""
    from kubernetes.client.exceptions import ApiException

    from sshserver.grants.durations import parse_duration
    from sshserver.kube.client import TRANSPORT_ERRORS
    from sshserver.ssh import hostkeys
    from sshserver.ssh.hostcerts import CA_PUBLIC_KEY, HostCertError, cert_entry, sign_host_key

    try:
        validity = parse_duration(args.validity)
        ca_private = args.ca_key.expanduser().read_bytes()
    except ValueError as exc:
        return _fail(f"--validity: {exc}")
    except OSError as exc:
        return _fail(f"cannot read {args.ca_key}: {exc.strerror}")
    principals = [p.strip() for p in args.principals.split(",") if p.strip()]
    kube = _load_kube(args)
    try:
        keys = hostkeys.read_secret(kube.core, *args.secret)
        entries: dict[str, bytes] = {}
        for name, key in zip(hostkeys.KEY_NAMES, keys, strict=True):
            cert, ca_line = sign_host_key(ca_private, f"{key.get_name()} {key.get_base64()}".encode(), principals,
                                          validity)
            entries[cert_entry(name)] = cert + b"\n"
            entries[CA_PUBLIC_KEY] = ca_line + b"\n"
        hostkeys.store_certificates(kube.core, *args.secret, entries)
    except (hostkeys.HostKeyError, HostCertError) as exc:
        return _fail(str(exc))
    except (ApiException, *TRANSPORT_ERRORS) as exc:
        return _fail(_api_failure(exc))
    print(f"signed {len(keys)} host keys for {', '.join(principals)}; restart the gateways to present them")
    return 0


def doctor(args: argparse.Namespace) -> int:
    """Prints one line per check; 1 when one FAILed. No traceback and no exit 2: a kubeconfig that
    cannot be loaded is a finding like the others."""
    from sshserver.grants.keys import fingerprint
    from sshserver.kube.client import KubeClient
    from sshserver.ssh import hostkeys

    from .doctor import Cluster, Install, Status, config_failure, run

    try:
        kube = KubeClient.load(args.kubeconfig, args.context)
    except Exception as exc:  # a malformed kubeconfig raises YAML, Key and Attribute errors too: one line
        print(config_failure(exc, args.kubeconfig).line())
        return 1

    def read_host_keys(namespace: str, name: str) -> list[str]:
        try:
            keys = hostkeys.read_secret(kube.core, namespace, name)
        except hostkeys.HostKeyError as exc:
            raise ValueError(str(exc)) from None
        return [f"{key.get_name()} {fingerprint(key.asbytes())}" for key in keys]

    install = Install(namespace=args.namespace, name=args.name, service_account=args.service_account,
                      secret=args.secret)
    failed = False
    for result in run(Cluster(kube), install, read_host_keys, address=args.address, key=args.key,
                      probe_timeout=args.timeout):
        print(result.line(), flush=True)
        failed = failed or result.status is Status.FAIL
    return 1 if failed else 0


def run_operator(args: argparse.Namespace) -> int:
    from sshserver.grants.access import AccessStore

    from .controlplane import ControlPlane, ControlPlaneError

    configure(args.log_level)
    control = ControlPlane(_load_kube(args), AccessStore(), resync_interval=args.resync_interval)
    try:
        control.start()
    except ControlPlaneError as exc:
        return _fail(str(exc))
    event(log, "ready", grants=len(control.store.current.grants), source="cluster")
    _wait_for_signal(lambda: True)
    control.stop()
    event(log, "stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "completion":
        print(completion_script(parser, args.shell).rstrip("\n"))
        return 0
    if args.command == "serve":
        return serve(args)
    if args.command == "operator":
        return run_operator(args)
    if args.command == "known-hosts":
        return known_hosts(args)
    if args.command == "host-cert":
        return host_cert(args)
    if args.command == "doctor":
        return doctor(args)
    from .manifests import config_targets, grant_manifest, read_keys, ssh_config

    try:
        if args.command == "grant":
            print(grant_manifest(user=args.user, keys=read_keys(args.key), namespace=args.namespace,
                                 selector=args.selector, name=args.name, expires=args.expires,
                                 allow=args.allow, ports=args.port_forward), end="")
        elif args.command == "ssh-config":
            print(ssh_config(host=args.host, port=args.port, alias=args.alias, identity=args.identity,
                             known_hosts=args.known_hosts_file, targets=config_targets(args.target, args.name)),
                  end="")
    except ValueError as exc:
        return _fail(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
