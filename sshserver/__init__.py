"""podssh data plane: an SSH server that bridges sessions to Kubernetes pod exec streams."""

__version__ = "0.1.0"
