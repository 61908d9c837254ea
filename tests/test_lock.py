"""The run lock's judgement of its holder (ecgpipe/lock.py) without a run: which PIDs it asks, which it cannot.
The locks taken and lost by real runs are in test_reliability.py (system)."""

from __future__ import annotations

import json
import os
import socket

import pytest

from ecgpipe.lock import LockHeld, RunLock


def test_a_pid_is_asked_only_where_it_names_the_same_process(tmp_path, monkeypatch):
    """A lock records its process's start, its machine's boot and PID namespace: a PID reused by a live process (this
    one, here), or one from before a reboot, no longer blocks the folder for ever; a run in another PID namespace with
    the same host name (a restarted container, host networking) is judged by its heartbeat, not by a PID that means
    another process here."""
    from ecgpipe.lock import _machine, _process_start

    lock, me = tmp_path / RunLock.NAME, {"host": socket.gethostname(), "pid": os.getpid(), "started": "then"}
    here = _machine()
    assert here["boot_id"] and here["pid_namespace"] and _process_start(os.getpid())
    # this very PID, but a process that started at another time: a restarted container's earlier run
    lock.write_text(json.dumps({**me, "process_start": "1", **here}))
    assert not RunLock(tmp_path).holder_running()
    with pytest.warns(UserWarning, match="no longer running"):
        RunLock(tmp_path).acquire().release()
    # the same PID on a boot since gone: the machine restarted
    lock.write_text(json.dumps({**me, "process_start": _process_start(os.getpid()), **here, "boot_id": "another"}))
    with pytest.warns(UserWarning, match="this machine has restarted since"):
        RunLock(tmp_path).acquire().release()
    # another PID namespace under the same host name: alive while it touches its lock, as another host's run is
    lock.write_text(json.dumps({**me, "pid": 999_999_999, **here, "pid_namespace": -1}))
    with pytest.raises(LockHeld, match="last seen 0 s ago"):
        RunLock(tmp_path).acquire()
    # this process itself, as it is now: alive (a lock without these fields, before 0.21.0, is asked by PID alone)
    lock.write_text(json.dumps({**me, "process_start": _process_start(os.getpid()), **here}))
    assert RunLock(tmp_path).holder_running()
    lock.write_text(json.dumps(me))
    assert RunLock(tmp_path).holder_running()
    with RunLock(tmp_path / "new") as taken:
        assert {"process_start", "boot_id", "pid_namespace"} <= set(taken.holder())
    import ecgpipe.lock as lock_module

    # /proc hiding other users' processes (hidepid): a start not readable here leaves the live PID to tell
    monkeypatch.setattr(lock_module, "_process_start", lambda pid: None)
    lock.write_text(json.dumps({**me, "process_start": "123", **here}))
    assert RunLock(tmp_path).holder_running()
    # a PID namespace (or boot) this process cannot read: a lock recording one is judged by its heartbeat
    monkeypatch.setattr(lock_module, "_machine", lambda: {"boot_id": here["boot_id"]})
    lock.write_text(json.dumps({**me, "pid": 999_999_999, **here}))
    assert RunLock(tmp_path).holder_running()  # touched just now: alive, although no process has that PID here
    monkeypatch.setattr(lock_module, "_machine", lambda: {})
    lock.write_text(json.dumps({**me, "pid": 999_999_999, **here, "boot_id": "another"}))
    assert RunLock(tmp_path).holder_running()  # no boot id here to compare: not taken for a reboot
