"""Keeping the node's view of its Jobs and Pods current: list, then watch from that
resourceVersion; relist on 410; back off and resume on a cut. A poller with the same output
is kept as a fallback and as the benchmarks' baseline.

Both deliver to a sink: `sink(("sync", kind, items))` with a complete snapshot after every (re)list,
and `sink(("event", kind, WatchEvent))` for each change in between.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from node import retry
from node.cluster import Cluster, WatchExpired
from node.errors import ClusterError, TransientClusterError

log = logging.getLogger(__name__)

Sink = Callable[[tuple], None]
KINDS = ("jobs", "pods")


class Watcher(threading.Thread):
    """One thread per kind, watching the objects that match `selector`."""

    def __init__(self, cluster: Cluster, kind: str, selector: str, sink: Sink,
                 stop: threading.Event, timeout_seconds: int,
                 policy: retry.RetryPolicy = retry.FOREVER):
        super().__init__(name=f"watch-{kind}", daemon=True)
        self.cluster, self.kind, self.selector, self.sink = cluster, kind, selector, sink
        self.stop_event = stop
        self.timeout_seconds = timeout_seconds
        self.policy = policy
        self._resp = None
        self._lock = threading.Lock()
        self.healthy = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except retry.Cancelled:
            pass
        except Exception:  # a bug here must not go unnoticed: log it; health turns red
            log.exception("watcher for %s stopped by an unexpected error", self.kind)
            self.healthy.clear()

    def _run(self) -> None:
        rv = None
        delays = self.policy.delays()
        while not self.stop_event.is_set():
            try:
                if rv is None:
                    items, rv = self.cluster.list_objects(self.kind, self.selector)
                    self.sink(("sync", self.kind, items))
                    self.healthy.set()
                for event in self.cluster.watch(self.kind, self.selector, rv,
                                                self.timeout_seconds, self._set_response):
                    self.healthy.set()
                    delays = self.policy.delays()  # a working stream resets the back-off
                    rv = event.object.get("metadata", {}).get("resourceVersion") or rv
                    if event.type != "BOOKMARK":
                        self.sink(("event", self.kind, event))
                    if self.stop_event.is_set():
                        return
                self.healthy.set()
                # the server closed the stream at timeoutSeconds: resume from rv
            except WatchExpired:
                log.info("watch of %s expired at resourceVersion %s; relisting", self.kind, rv)
                rv = None
            except (TransientClusterError, ClusterError) as e:
                if self.stop_event.is_set():
                    return
                self.healthy.clear()
                delay = next(delays, self.policy.maximum)
                log.warning("watch of %s interrupted (%s); resuming in %.2fs", self.kind, e, delay)
                retry.wait(self.stop_event, delay)
            finally:
                self._set_response(None)

    def _set_response(self, resp) -> None:
        with self._lock:
            self._resp = resp

    def interrupt(self) -> None:
        """Unblock a thread waiting on the stream (shutdown)."""
        with self._lock:
            resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()
            except Exception:  # best effort: the socket may already be gone
                pass


class Poller(threading.Thread):
    """Lists Jobs and Pods every `interval` seconds: the vantage6-style baseline."""

    def __init__(self, cluster: Cluster, selector: str, sink: Sink, stop: threading.Event,
                 interval: float):
        super().__init__(name="poller", daemon=True)
        self.cluster, self.selector, self.sink = cluster, selector, sink
        self.stop_event = stop
        self.interval = interval
        self.healthy = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                try:
                    for kind in KINDS:
                        items, _ = self.cluster.list_objects(kind, self.selector)
                        self.sink(("sync", kind, items))
                    self.healthy.set()
                except ClusterError as e:
                    self.healthy.clear()
                    log.warning("poll failed: %s", e)
                retry.wait(self.stop_event, self.interval)
        except retry.Cancelled:
            pass

    def interrupt(self) -> None:
        pass
