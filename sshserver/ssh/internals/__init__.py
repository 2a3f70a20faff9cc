"""paramiko's internals, in one place: what we patch (patches.py: linear integer parsing,
key-blob and info-response guards, receive-window enforcement and growth), what we add
(eow.py: eow@openssh.com; fastpipe.py: a receive buffer without copies) and what we read of the
Transport (transport.py). pyproject.toml pins paramiko to the versions these were checked on;
tests/unit/ssh/test_paramiko_patches.py checks the patches against the originals.
"""

__all__ = [
    "eow",
    "fastpipe",
    "patches",
    "transport",
]
