"""Sessions: one channel bridged to one pod stream, each on its own thread. lifecycle.py is the
skeleton every session follows (attach the stream, copy both ways, end exactly once); it is
where a channel meets a pod exec stream (execsession.py: shell, exec and the container's
sftp-server), the gateway's own SFTP server over pod commands (sftpgateway.py), and `ssh -L`
over the portforward API (forward.py); `ssh ls@gateway` lists the key's targets instead of
entering one (listing.py, its table in targettable.py). command.py builds the argv a session runs, hangup.py
ends what a dropped session left running (hangupqueue.py batches those per pod),
exittrailer.py makes a lost exit status visible.
Sessions see the gateway only through SessionServices (services.py).
"""

__all__ = [
    "command",
    "execsession",
    "exittrailer",
    "forward",
    "hangup",
    "hangupqueue",
    "lifecycle",
    "listing",
    "services",
    "sftpgateway",
    "targettable",
    "trusted",
]
