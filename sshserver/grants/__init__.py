"""The grants layer: what SSHAccess objects mean, with no I/O but reading files it is given.

Parses SSHAccess objects into immutable Grants (access.py), holds the AccessSnapshot the gateway
authorizes from and the AccessStore that swaps it, and parses everything a grant or a client
names: keys and fingerprints (keys.py), OpenSSH user certificates (certificates.py), KRLs and
revoked-key lists (revocation.py), target names like `shop/deploy/web:main` (target.py),
label selectors, durations and times, env names. Pure: it imports nothing else of podssh and no
Kubernetes, SSH or operator library (the import contract checks it), and logs through plain
`logging` with a `fields` extra that the JSON formatter renders.
"""

__all__ = [
    "access",
    "accessfile",
    "certificates",
    "durations",
    "envnames",
    "keys",
    "labelselector",
    "revocation",
    "target",
]
