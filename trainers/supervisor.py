"""Runs the trainer (Huey consumer) as a child process of the server and keeps it running.

The child dies with its parent (Linux parent-death signal), so a `kill -9` of the server's worker
leaves no orphan; the consumer's own lock file keeps a restarted server from running a second one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from fewshot.settings import get_settings

logger = logging.getLogger("fewshot.supervisor")

PR_SET_PDEATHSIG = 1


_libc = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded here: the forked child must not load it


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the thread that started us exits."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildSupervisor:
    def __init__(self, command: Sequence[str], name: str, stop_timeout: float = 30.0,
                 restart_delay: float | None = None) -> None:
        """`restart_delay`: seconds between a child's exit and its restart (TRAINER_RESTART_DELAY_SECONDS)."""
        self._command = list(command)
        self._name = name
        self._stop_timeout = stop_timeout
        self._restart_delay = get_settings().trainer_restart_delay_seconds if restart_delay is None else restart_delay
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._spawn_lock = threading.Lock()  # no child is started once stop() has begun
        # The parent-death signal follows the spawning thread, so one long-lived thread spawns all.
        self._thread = threading.Thread(target=self._keep_running, name=f"{name}-supervisor", daemon=True)

    @classmethod
    def for_module(cls, module: str, name: str) -> ChildSupervisor:
        return cls([sys.executable, "-m", module], name)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """SIGTERM (the consumer requeues a running job), then SIGKILL after the timeout."""
        with self._spawn_lock:
            self._stopping.set()
            process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(self._stop_timeout)
        except subprocess.TimeoutExpired:
            logger.error("%s did not stop within %.0fs; killing it", self._name, self._stop_timeout)
            process.kill()
            process.wait()
        logger.info("%s stopped", self._name)

    def _keep_running(self) -> None:
        while True:
            with self._spawn_lock:
                if self._stopping.is_set():
                    return
                # preexec_fn only makes one system call, so it is safe beside other threads.
                process = self._process = subprocess.Popen(
                    self._command, preexec_fn=_die_with_parent, env=os.environ.copy())  # noqa: PLW1509
            logger.info("%s started (pid %d)", self._name, process.pid)
            code = process.wait()
            # BentoML's process manager stops a worker's children together with the worker (circus
            # `stop_children=True`), so on every shutdown the child exits just before stop() is called:
            # wait for that first, and report only an exit that no shutdown follows.
            if self._stopping.wait(self._restart_delay):
                return
            logger.error("%s exited with code %s; restarting it", self._name, code)
