"""The Kubernetes layer: everything that talks to the API server. The client with its one error
type (client.py), the WebSocket dial (wsdial.py) over TLS connections that resume their session
(tlsdial.py), the pod exec stream and its exit status (execstream.py, exitstatus.py), the
portforward stream (portforwardstream.py), a small runner of commands in a pod (podrunner.py),
the watch-fed pod cache (podcache.py), the resolver from a target name to a container the grants
cover (resolver.py), and the keepalive that ends streams of a silent API server (keepalive.py).
"""

__all__ = [
    "client",
    "execstream",
    "exitstatus",
    "keepalive",
    "podcache",
    "podrunner",
    "portforwardstream",
    "resolver",
    "tlsdial",
    "wsdial",
]
