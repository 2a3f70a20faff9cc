"""podssh control plane (import name `sshoperator`): watches SSHAccess objects with kopf and
feeds the data plane an immutable AccessSnapshot; writes status and Events back."""

GROUP = "podssh.dev"
VERSION = "v1alpha1"
PLURAL = "sshaccesses"
KIND = "SSHAccess"
