"""The gateway's settings: one frozen GatewaySettings, built by the CLI from flags and read by
every layer above (limits, timeouts, transport tuning). Nothing here changes after start.
"""

__all__ = [
    "settings",
]
