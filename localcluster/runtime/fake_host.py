"""The fake runtime's end of the sidecar host (`localcluster.runtime.fake_sidecars`): starts the
process on first use, sends it commands and routes its replies to the containers waiting."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
MODULE = "localcluster.runtime.fake_sidecars"


class HostError(Exception):
    """The sidecar cannot be hosted (its message is the container's log)."""


class SidecarHost:
    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task | None = None
        self.ready: dict[str, asyncio.Future] = {}  # id -> (pub, rep) ports
        self.exits: dict[str, Callable[[int | None], None]] = {}  # id -> exit code; None: lost
        self._lock = asyncio.Lock()

    async def _ensure(self) -> asyncio.subprocess.Process:
        async with self._lock:
            if self.proc is None or self.proc.returncode is not None or self.reader is None \
                    or self.reader.done():
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
                       "PYTHONDONTWRITEBYTECODE": "1"}
                # the cluster's own process group: whatever stops the cluster stops it too
                self.proc = await asyncio.create_subprocess_exec(
                    self.python, "-m", MODULE, stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT, env=env)
                self.reader = asyncio.ensure_future(self._read(self.proc))
                log.info("fake runtime: sidecar host started (pid %d)", self.proc.pid)
            return self.proc

    def _send(self, *words: str) -> bool:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return False
        try:
            proc.stdin.write((" ".join(words) + "\n").encode())
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            return False
        return True

    async def start(self, cid: str, env: dict[str, str],
                    on_exit: Callable[[int | None], None]) -> tuple[int, int]:
        """Host a sidecar; returns its (pub, rep) ports once bound, so a startup probe of its
        port succeeds at once. Raises HostError."""
        await self._ensure()
        fut = asyncio.get_running_loop().create_future()
        self.ready[cid] = fut
        self.exits[cid] = on_exit
        if not self._send("start", cid, json.dumps({"env": env}, separators=(",", ":"))):
            self.ready.pop(cid, None)
            self.exits.pop(cid, None)
            raise HostError("the fake runtime's sidecar host is not running")
        try:
            return await fut
        except BaseException:
            self.exits.pop(cid, None)
            if fut.cancelled() or not fut.done():
                self.kill(cid)  # cancelled while starting: it must not outlive this
            raise
        finally:
            self.ready.pop(cid, None)

    def stop(self, cid: str) -> None:
        self._send("stop", cid)

    def kill(self, cid: str) -> None:
        self._send("kill", cid)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            verb, _, rest = line.decode(errors="replace").strip().partition(" ")
            cid, _, arg = rest.partition(" ")
            if verb == "ready" and cid in self.ready:
                pub, _, rep = arg.partition(" ")
                if not self.ready[cid].done():
                    self.ready[cid].set_result((int(pub), int(rep)))
            elif verb == "failed" and cid in self.ready:
                self.exits.pop(cid, None)
                if not self.ready[cid].done():
                    self.ready[cid].set_exception(HostError(json.loads(arg)))
            elif verb == "exited":
                callback = self.exits.pop(cid, None)
                if callback is not None:
                    callback(int(arg))
        await proc.wait()
        for cid, fut in self.ready.items():  # still starting: start() raises, nothing exits
            self.exits.pop(cid, None)
            if not fut.done():
                fut.set_exception(HostError(f"the sidecar host exited ({proc.returncode})"))
        exits, self.exits = self.exits, {}
        if exits:
            log.warning("fake runtime: the sidecar host exited with %s while hosting %d "
                        "sidecars", proc.returncode, len(exits))
        for callback in exits.values():
            callback(None)

    async def close(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()  # end of stdin: the host closes every sidecar and exits
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)
        self.proc = None
