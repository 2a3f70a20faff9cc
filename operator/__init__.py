"""podssh control plane (import name `sshoperator`): watches SSHAccess objects with kopf and
feeds the data plane an immutable AccessSnapshot; writes status and Events back.

controlplane.py runs it beside the gateway (the kopf loop in its own thread, the resync
thread); handlers.py are kopf's handlers; inventory.py turns objects into snapshots and status
(status.py computes the conditions); writer.py is the "status-writer" thread, the one writer
of status patches and Events; sessionevents.py turns the gateway's session reports into
Events; sessionobjects.py keeps one SSHSession object per live session (the "session-objects"
thread, a sibling writer: its own Lease, cleanup of dead replicas' objects, Events on target
pods); manifests.py renders the install manifests; doctor.py checks an installation from a
user's machine (`podssh doctor`). cli.py, the `podssh` command, is the
composition root: the only module that knows both planes (the import contract checks it).
"""

GROUP = "podssh.dev"
VERSION = "v1alpha1"
PLURAL = "sshaccesses"
KIND = "SSHAccess"

SESSION_PLURAL = "sshsessions"
SESSION_KIND = "SSHSession"
