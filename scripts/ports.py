"""Loopback ports and the server processes behind them: a free port, a taken one and its
holder, whether a server from a pid file still runs.

Shared by `make dev` (scripts/dev.py), the local servers, the tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

PROC = Path("/proc")
TCP_LISTEN = "0A"  # the LISTEN state in /proc/net/tcp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """A server could not bind host:port: something listens there or holds it bound."""
    if port_open(port, host):
        return True
    with socket.socket() as sock:
        # As the servers bind: a socket in TIME_WAIT does not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == TCP_LISTEN:
                    inodes.add(fields[9])
    return inodes


def port_holder(port: int) -> str | None:
    """`pid N (command line)` of the process listening on `port`, when /proc lets us see it."""
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not sockets:
        return None
    for process in PROC.iterdir():
        if not process.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (process / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if fd.readlink().as_posix() in sockets:
                        raw = (process / "cmdline").read_bytes()
                        command = " ".join(raw.decode(errors="replace").split("\0"))
                        command = " ".join(command.split())  # one line, whatever argv held
                        return f"pid {process.name} ({command[:120]})"
    return None


def port_taken_message(port: int, what: str, variable: str) -> str:
    """What a person needs when `port` is taken: the port, its holder, the variable to set."""
    holder = port_holder(port)
    held = f" by {holder}: stop it," if holder else ":"
    instead = f"set {variable} to a free port (e.g. {variable}={free_port()})"
    return f"port {port} for {what} is taken{held} or {instead}"


def process_cwd(pid: int) -> Path | None:
    """The folder a process runs in; None once it is gone (or not ours to see)."""
    try:
        return Path(os.readlink(PROC / str(pid) / "cwd"))
    except OSError:
        return None


def alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie waiting for its parent counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    with contextlib.suppress(OSError, IndexError):
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def server_pid(pidfile: Path, data_dir: Path) -> int | None:
    """The pid in `pidfile` if that server still runs in `data_dir` (not a recycled pid)."""
    pid = read_pid(pidfile)
    if pid is None or not alive(pid):
        return None
    if PROC.is_dir() and process_cwd(pid) != data_dir.resolve():
        return None
    return pid


def wait_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
