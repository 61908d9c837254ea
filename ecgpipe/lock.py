"""One run per output folder: ``OUT/.ecgpipe.lock`` names the run that holds it (host, PID, start time).

A second ``ecgpipe run`` on the same folder is refused at once, naming the holder. A lock left by a process that is
gone (killed, machine rebooted) is taken over with a warning. ``ecgpipe status`` reads the lock to show a run in
progress. The lock is a file created with O_EXCL. On its own host a holder is alive while its PID is; a holder on
another host (a shared file system on a cluster) cannot be asked, so the run that holds a lock touches it every
``HEARTBEAT_S`` seconds, and a lock from another host untouched for ``STALE_AFTER_S`` (a node that died) is taken over
like a dead process's. How long it has been silent is read on the file system's own clock, not this host's: the lock's
modification time against that of a file this process touches beside it at that moment (on a shared file system the
server stamps both), so a node whose clock is off by minutes neither takes over a live run's lock nor waits on a dead
one's. The margin stays wide for file systems that cache attributes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable
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


def _process_start(pid: int) -> str | None:
    """When the process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``'s 22nd field): with the boot
    id, tells a live holder from a later process given its PID. None where there is no /proc (macOS) or no process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # after the command's name, which may hold spaces and ')'


def _machine() -> dict:
    """This process's boot (a reboot reuses PIDs) and PID namespace (containers sharing a host name do not share
    PIDs): what a lock records so that a PID is asked only where it means the same process. Empty without /proc."""
    out = {}
    with contextlib.suppress(OSError):
        out["boot_id"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    with contextlib.suppress(OSError):
        out["pid_namespace"] = os.stat("/proc/self/ns/pid").st_ino
    return out


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
    HEARTBEAT_S = 30.0
    STALE_AFTER_S = 600.0

    def __init__(self, out_dir: str | Path, heartbeat_s: float | None = None, stale_after_s: float | None = None,
                 on_lost: Callable[[str], None] | None = None):
        self.path = Path(out_dir) / self.NAME
        self.held = False
        self.lost = False  # taken over by another run after a long stall of this one (a suspended job, a frozen VM)
        self.on_lost = on_lost  # told why, from the heartbeat's thread: the run must stop writing beside the other
        self.heartbeat_s = self.HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.stale_after_s = self.STALE_AFTER_S if stale_after_s is None else stale_after_s
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._me: dict = {}

    def holder(self) -> dict | None:
        """The lock's content, or None when the folder is not locked."""
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, NotADirectoryError):  # no lock, or no such folder (a path below a file)
            return None
        except (OSError, json.JSONDecodeError):
            return {"host": "?", "pid": -1, "started": "?"}

    def holder_running(self, doc: dict | None = None) -> bool:
        """Whether the lock's holder (``doc``, read from the lock when not given) is still running."""
        doc = self.holder() if doc is None else doc
        if not doc:
            return False
        if self._asks_its_pid(doc):
            pid = int(doc.get("pid", -1))
            # a recorded start that differs: the PID now names another process (a reused PID); one not readable here
            # (/proc mounted hidepid: another user's processes are hidden) leaves the PID alone to tell
            started = _process_start(pid)
            return _alive(pid) and (started is None or doc.get("process_start") in (None, started))
        if self._rebooted(doc):
            return False  # every process of that boot is gone
        return self.silent_s() < self.stale_after_s  # another host's run: alive while it keeps touching the lock

    @staticmethod
    def _asks_its_pid(doc: dict) -> bool:
        """Whether the holder's PID can be asked here: same host, same boot, same PID namespace (as far as the lock
        records them: locks before 0.21.0 record only the host). Else its heartbeat tells."""
        here = _machine()  # a field the lock records and this process cannot read: not the same, as far as it knows
        return doc.get("host") == socket.gethostname() and all(doc.get(k) in (None, here.get(k)) for k in ("boot_id", "pid_namespace"))

    @staticmethod
    def _rebooted(doc: dict) -> bool:
        """Whether the lock was written on this machine before it last booted (as far as both boot ids are known)."""
        here = _machine().get("boot_id")
        return doc.get("host") == socket.gethostname() and here is not None and doc.get("boot_id") not in (None, here)

    def silent_s(self) -> float:
        """Seconds since the holder last touched the lock, on the file system's clock (0 when it is gone)."""
        try:
            touched = self.path.stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return 0.0
        return max(0.0, self._file_system_now() - touched)

    def _file_system_now(self) -> float:
        """The time now on the clock that stamps the lock: the modification time of a file of this process's own,
        touched beside the lock (this host's clock where the folder cannot be written)."""
        probe = self.path.with_name(f"{self.path.name}.clock.{socket.gethostname()}.{os.getpid()}")
        try:
            probe.touch()
            os.utime(probe)  # an existing probe (a crash between touch and unlink) is stamped now as well
            return probe.stat().st_mtime
        except OSError:
            return time.time()
        finally:
            probe.unlink(missing_ok=True)

    def _mine(self, doc: dict | None = None) -> bool:
        """Whether the lock file (or ``doc``, read from it) still names this run (it may have been taken over after a
        long stall)."""
        doc = (self.holder() if doc is None else doc) or {}
        return isinstance(doc, dict) and all(doc.get(k) == self._me.get(k) for k in ("host", "pid", "started"))

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                doc = json.loads(self.path.read_text())
            except FileNotFoundError:
                doc = {}  # removed: no longer this run's
            except (OSError, ValueError):  # a passing file-system error (NFS ESTALE, EIO), a torn read: ask again later
                continue
            if not self._mine(doc):  # taken over (or removed): touching it would keep another run's lock alive
                self.lost = True
                why = f"{self.path}: this run no longer holds its output folder's lock (now: {doc or None})"
                warnings.warn(why, stacklevel=1)
                if self.on_lost is not None:  # two runs writing one store would mix their units: this one stops
                    self.on_lost(why + "; this run stops: the run that took it over goes on, and a rerun resumes")
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return
            except OSError:  # a passing file-system error (NFS ESTALE, EIO): try again at the next beat
                continue

    def _take_over(self, stale: dict) -> bool:
        """Remove the lock judged stale, unless another run took it over meanwhile: the file is first renamed to a
        name of this process's own (atomic), and put back when it is not the one judged stale. True when removed."""
        aside = self.path.with_name(f"{self.path.name}.stale.{socket.gethostname()}.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:  # another run took it first
            return False
        try:
            taken = json.loads(aside.read_text())
        except (OSError, json.JSONDecodeError):
            taken = None
        if taken is not None and taken != stale:  # a fresh lock created since it was judged: give it back
            try:
                os.link(aside, self.path)  # fails if yet another lock appeared: that one stands
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": datetime.now().isoformat(timespec="seconds"),
              "process_start": _process_start(os.getpid()), **_machine()}
        self._me = me
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                doc = self.holder() or {}
                where = f"PID {doc.get('pid')} on {doc.get('host')}, started {doc.get('started')}"
                local = self._asks_its_pid(doc)
                if self.holder_running():
                    raise self.held_error(doc) from None
                gone = ("that process is no longer running" if local else "this machine has restarted since" if self._rebooted(doc)
                        else f"it has not touched the lock for {self.silent_s():.0f} s (its host is down?)")
                if not self._take_over(doc):
                    continue  # another run took it over first: judge the new holder
                stopped = _stop_orphans(doc.get("children", [])) if local else []
                warnings.warn(f"{self.path}: taking over the lock of {where}: {gone}"
                              + (f"; stopped the Prefect server it left running (PID {', '.join(map(str, stopped))})" if stopped else ""),
                              stacklevel=2)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            self._stop.clear()
            self._beat = threading.Thread(target=self._heartbeat, name="ecgpipe-lock-heartbeat", daemon=True)
            self._beat.start()
            return self
        raise LockHeld(f"{self.path}: could not take the lock")

    def held_error(self, doc: dict) -> LockHeld:
        """The error that refuses a second run while ``doc``'s run holds the folder."""
        where = f"PID {doc.get('pid')} on {doc.get('host')}, started {doc.get('started')}"
        how = ("" if self._asks_its_pid(doc) else f", last seen {self.silent_s():.0f} s ago; a lock of "
               f"another host is taken over after {self.stale_after_s:.0f} s without a sign of life")
        return LockHeld(f"{self.path.parent}: another ecgpipe run holds this output folder ({where}{how}); wait for it, "
                        "or use another --out")

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
            self._stop.set()
            if self._beat is not None:
                self._beat.join()
            if self._mine():  # never remove a lock another run took over meanwhile
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def refuse_if_held(out_dir: str | Path) -> None:
    """Refuse a run at once when a running one holds its output folder: before the run's checks plan and hash the
    corpus (minutes at 300 000 records), not after. The lock itself is taken later, by ``output_lock``."""
    lock = RunLock(out_dir)
    doc = lock.holder()
    if doc and lock.holder_running(doc):
        raise lock.held_error(doc)


def output_lock(out, on_lost: Callable[[str], None] | None = None) -> RunLock | contextlib.nullcontext:
    """The lock of a run's output folder (``out``: a ``Location``): a ``RunLock`` on a local or shared-file-system
    folder; none on an object store's URL, which has no atomic "create if absent" to build one on (said in a warning:
    two runs into one URL at once are not refused there)."""
    if out.local_root:
        return RunLock(out.local_root, on_lost=on_lost)
    warnings.warn(f"--out {out.url}: an object store holds no run lock, so a second run into it at the same time is "
                  "not refused: schedule such runs apart", UserWarning, stacklevel=2)
    return contextlib.nullcontext()
