"""The gateway core: the process-level pieces that own everything else. core.py accepts and
supervises connections and shuts down (its docstring is the thread map); registry.py owns the
live sessions and their grant bindings (maxSessions); enforcer.py ends sessions their grants
no longer cover, on every snapshot change and every second.
"""

__all__ = [
    "core",
    "enforcer",
    "registry",
]
