"""Pod IPs of fake pods (`localcluster.runtime.fake`): a loopback address each, nothing else.

Linux routes all of 127.0.0.0/8 to ``lo``, so any address there can be bound without setting
anything up: a fake pod gets one of 127.80.0.1 … 127.95.255.254 (127.80.0.0/12, about a million,
apart from the process runtime's 127.0.1.x), handed out in turn, so an address comes back only
after the others; no network namespace, veth or firewall rule is made (at thousands of pods that
is what would cost). The address is kept until the pod is deleted, so the pod's status and a
sidecar still draining keep it. ``hostNetwork`` pods get the host's address, as elsewhere.
"""
from __future__ import annotations

import ipaddress
import logging

from localcluster.network.netns import HOST_IP, NetworkError, PodNet

log = logging.getLogger(__name__)

CIDR = ipaddress.ip_network("127.80.0.0/12")


class LoopbackNetwork:
    mode = "loopback"

    def __init__(self, cidr: ipaddress.IPv4Network = CIDR) -> None:
        self._first = int(cidr.network_address) + 1
        self._size = cidr.num_addresses - 2  # neither the network nor the broadcast address
        self._next = 0
        self._used: dict[str, str] = {}  # uid -> ip
        self._taken: set[str] = set()

    async def setup(self, uid: str, host_network: bool = False) -> PodNet:
        if host_network:
            return PodNet(HOST_IP)
        if uid in self._used:
            return PodNet(self._used[uid])
        for _ in range(self._size):
            ip = str(ipaddress.IPv4Address(self._first + self._next))
            self._next = (self._next + 1) % self._size
            if ip not in self._taken:
                self._used[uid] = ip
                self._taken.add(ip)
                return PodNet(ip)
        raise NetworkError(f"all {self._size} loopback pod IPs are in use")

    def release(self, uid: str) -> None:
        ip = self._used.pop(uid, None)
        if ip is not None:
            self._taken.discard(ip)

    def finished(self, uid: str) -> None:
        """Kept until the pod is deleted (`release`)."""

    async def drain(self) -> None:
        self._used.clear()
        self._taken.clear()
