"""One run per output folder: ``OUT/.ecgpipe.lock`` names the run that holds it (host, PID, start time).

A second ``ecgpipe run`` on the same folder is refused at once, naming the holder. A lock left by a process that is
gone (killed, machine rebooted) is taken over with a warning. ``ecgpipe status`` reads the lock to show a run in
progress. The lock is a local file created with O_EXCL; on a shared file system every host sees it, but whether its
PID is alive can only be checked on the holder's own host (a lock from another host is never taken over).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import warnings
from datetime import datetime
from pathlib import Path

from ecgpipe.errors import EcgpipeError


class LockHeld(EcgpipeError):
    """Another run holds the output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _stop_orphans(pids: list[int]) -> list[int]:
    """Stop processes a dead run left behind, only if they still are what it started (a Prefect/uvicorn server):
    a PID may have been reused since."""
    stopped = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "uvicorn" in cmdline or "prefect" in cmdline:
            try:
                os.kill(pid, signal.SIGTERM)
                stopped.append(pid)
            except OSError:
                pass
    return stopped


class RunLock:
    NAME = ".ecgpipe.lock"

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / self.NAME
        self.held = False

    def holder(self) -> dict | None:
        """The lock's content, or None when the folder is not locked."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return {"host": "?", "pid": -1, "started": "?"}

    def holder_running(self) -> bool:
        doc = self.holder()
        return bool(doc) and (doc.get("host") != socket.gethostname() or _alive(int(doc.get("pid", -1))))

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": datetime.now().isoformat(timespec="seconds")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                doc = self.holder() or {}
                where = f"PID {doc.get('pid')} on {doc.get('host')}, started {doc.get('started')}"
                if self.holder_running():
                    raise LockHeld(f"{self.path.parent}: another ecgpipe run holds this output folder ({where}); "
                                   f"wait for it, or use another --out") from None
                stopped = _stop_orphans(doc.get("children", []))
                warnings.warn(f"{self.path}: taking over the lock of {where}: that process is no longer running"
                              + (f"; stopped the Prefect server it left running (PID {', '.join(map(str, stopped))})" if stopped else ""),
                              stacklevel=2)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise LockHeld(f"{self.path}: could not take the lock")

    def note_child(self, pid: int) -> None:
        """Record a process this run started (its temporary Prefect server): if this run is killed outright, the
        run that takes the lock over stops it."""
        doc = self.holder() or {}
        doc["children"] = [*doc.get("children", []), int(pid)]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.path)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
