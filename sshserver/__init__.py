"""podssh data plane: an SSH server that bridges sessions to Kubernetes pod exec streams.

The version is pyproject.toml's, read from the installed package's metadata: sshserver.version."""
