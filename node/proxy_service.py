"""The proxy's Service, read from the cluster (CONTRACTS §5, §6): algorithm pods have no DNS, so
the node gives them the proxy's ClusterIP (``hostAliases``) and allows egress only to the port
the proxy's pods listen on (the Service's ``targetPort``, which need not equal its ``port``).

The node reads the one Service ``proxy.service`` in ``proxy.namespace`` (RBAC: ``get`` limited by
``resourceNames``) at start and again every ``RECHECK_SECONDS``; a changed address re-applies the
NetworkPolicy. While the Service cannot be read the node refuses to start runs: it never falls back
to letting pods resolve the name through cluster DNS.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from node import retry
from node.cluster import Cluster
from node.config import NodeConfig
from node.errors import ClusterError
from node.proxy_address import ProxyAddress, ProxyServiceError, parse_service

__all__ = ["ProxyAddress", "ProxyResolver", "ProxyServiceError", "parse_service",
           "read_proxy_service"]

log = logging.getLogger(__name__)

RECHECK_SECONDS = 30.0
UNRESOLVED_RETRY_SECONDS = 2.0


def read_proxy_service(cluster: Cluster, config: NodeConfig) -> ProxyAddress:
    proxy = config.proxy
    return parse_service(cluster.get_service(proxy.namespace, proxy.service), proxy.port)


class ProxyResolver:
    """The proxy's current address, re-read periodically on its own thread.

    ``on_change`` is called (on this thread, or the caller's for ``refresh``) with every new
    address; if it raises, the address is not taken and is tried again at the next check.
    """

    def __init__(self, read: Callable[[], ProxyAddress], on_change: Callable[[ProxyAddress], None],
                 stop: threading.Event, interval: float = RECHECK_SECONDS):
        self._read = read
        self._on_change = on_change
        self._stop = stop
        self._interval = interval
        self._lock = threading.Lock()
        self._current: ProxyAddress | None = None
        self._problem = "not resolved yet"
        self._thread = threading.Thread(target=self._loop, name="proxy-service", daemon=True)

    def current(self) -> ProxyAddress:
        """The address to use now; raises ProxyServiceError (with the reason) if there is none."""
        with self._lock:
            if self._current is None:
                raise ProxyServiceError(f"the proxy's Service is not resolved: {self._problem}")
            return self._current

    def refresh(self) -> bool:
        """Read the Service once; True if an address is known afterwards."""
        try:
            address = self._read()
            with self._lock:
                changed = address != self._current
            if changed:
                self._on_change(address)
                with self._lock:
                    self._current = address
                log.info("proxy service at %s:%s (pods' port %s)", address.cluster_ip,
                         address.port, address.target_port)
        except ClusterError as e:
            with self._lock:
                self._problem = str(e)
                known = self._current is not None
            # a known address stays in use: a failed read says nothing about the Service
            log.warning("cannot read the proxy's Service%s: %s",
                        " (keeping the last address)" if known else "; runs are refused", e)
        with self._lock:
            return self._current is not None

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        # unresolved: try again soon, so runs are refused for seconds, not a whole interval
        while not self._stop.wait(self._interval if self._current is not None
                                  else min(self._interval, UNRESOLVED_RETRY_SECONDS)):
            try:
                self.refresh()
            except retry.Cancelled:
                return
