"""Wiring: builds the node's parts from its settings, starts them in order and stops them."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from node import permissions, retry
from node.agent import Agent
from node.cluster import Cluster, load_api_client
from node.config import NodeConfig
from node.errors import ClusterError
from node.health import HealthServer, agent_alive
from node.heartbeat import HeartbeatPolicy
from node.ledger import Ledger
from node.live import LiveManager
from node.live_version import check_cluster_version
from node.manifests import build_network_policy, selector_for_node
from node.proxy_service import ProxyAddress, ProxyResolver, read_proxy_service
from node.reporting import Reporter
from node.server_link import ServerLink
from node.policy_view import KIND as POLICIES, PolicyView
from node.watching import KINDS, Poller, Watcher
from node.workspace import Workspace

log = logging.getLogger(__name__)


class NodeApp:
    def __init__(self, config: NodeConfig):
        self.config = config
        self.stop_event = threading.Event()
        self.api_client = load_api_client(config)
        self.cluster = Cluster(self.api_client, config.kubernetes.jobs_namespace,
                               config.completion.request_timeout_seconds)
        Path(config.task_dir).mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(Path(config.task_dir) / "node-ledger.sqlite")
        self.workspace = Workspace(config)
        beat = config.server_heartbeat
        self.link = ServerLink(config.server_url, config.api_key, config.node_id,
                               on_command=self._on_command, on_kill=self._on_kill,
                               on_explain=self._on_explain,
                               on_connected=self._on_connected, stop=self.stop_event,
                               runs_active=lambda: len(self.agent.runs),
                               heartbeat=HeartbeatPolicy(beat.interval_seconds, beat.suspect_after,
                                                         beat.fail_after))
        self.reporter = Reporter(self.link, self.ledger, self.stop_event)
        self.live = (LiveManager(config.live, config.node_id, self.link.emit)
                     if config.live.enabled else None)
        # transient errors retried within each read: one 5xx at start would refuse the first
        # runs until the next check (tests/reliability/test_faults.py)
        self.proxy = ProxyResolver(
            lambda: retry.call(lambda: read_proxy_service(self.cluster, config),
                               what="read the proxy's Service", stop=self.stop_event),
            self._apply_network_policy, self.stop_event)
        self.policies = PolicyView(config.kubernetes.jobs_namespace)
        self.agent = Agent(config, self.cluster, self.ledger, self.workspace, self.reporter,
                           self.stop_event, live=self.live, proxy=self.proxy.current,
                           policies=self.policies)
        selector = selector_for_node(config.node_id)
        c = config.completion
        if c.mode == "poll":
            self.watchers = [Poller(self.cluster, selector, self.agent.sink, self.stop_event,
                                    c.poll_interval_seconds)]
        else:
            self.watchers = [Watcher(self.cluster, kind, selector, self.agent.sink,
                                     self.stop_event, int(c.watch_timeout_seconds))
                             for kind in KINDS]
        # the policies that select each run's pod, for its provenance (any completion mode)
        self.watchers.append(Watcher(self.cluster, POLICIES, "", self.policies.sink,
                                     self.stop_event, int(c.watch_timeout_seconds)))
        self.health = HealthServer(config.health.host, config.health.port, self._probe)

    # callbacks from the server link (its threads)
    def _on_command(self, data) -> None:
        self.agent.submit_command(data)

    def _on_kill(self, data) -> dict:
        return self.agent.kill(data)

    def _on_explain(self, data) -> dict:
        """A researcher's dry run, relayed by the server (CONTRACTS §2 explain_task): what this
        node would do with the task. Only the Job and the policy are dry-run: the node may not
        create pods (an operator's `python -m node explain --server-dry-run` does that too)."""
        from node.explain import answer
        return answer(data, self.config, self.proxy.current, self.cluster.dry_run_create)

    def _on_connected(self) -> None:
        self.reporter.kick()

    def _probe(self) -> dict:
        return {
            "alive": agent_alive(self.agent.heartbeat, self.agent.is_alive()),
            "cluster": all(w.healthy.is_set() for w in self.watchers),
            "server": self.link.connected.is_set(),
            "runs": len(self.agent.runs),
            "finishing": len(self.agent.finishing.runs),  # ended, not yet cleaned up
            "outbox": self.ledger.outbox_size(),
        }

    def _apply_network_policy(self, address: ProxyAddress) -> None:
        """For every new proxy address (its targetPort is the policy's port). The resolver takes
        the address only once this succeeded: runs never start under an outdated policy."""
        try:
            retry.call(lambda: self.cluster.apply_network_policy(
                build_network_policy(self.config, address)), what="apply network policy",
                stop=self.stop_event)
        except ClusterError as e:
            raise ClusterError(f"cannot apply the algorithms' network policy: {e}") from e

    def start(self) -> None:
        # every permission the node will use, before anything starts: one missing stops the node
        # here with its name (MissingPermissionsError), rather than failing runs later
        retry.call(lambda: permissions.check(self.cluster.access_review, self.config),
                   what="check the node's permissions", stop=self.stop_event)
        # without the proxy's Service (and the policy made from it) runs are refused with the
        # reason; the resolver keeps trying, so a Service created later is picked up
        if not self.proxy.refresh():
            log.error("runs are refused until the proxy's Service %s/%s can be read",
                      self.config.proxy.namespace, self.config.proxy.service)
        self.proxy.start()
        if self.live is not None:
            # native sidecars need Kubernetes 1.29+: refuse clearly rather than make pods that
            # an older cluster would run with the sidecar as a blocking init container
            version = retry.call(lambda: check_cluster_version(self.api_client),
                                 what="read the cluster's version", stop=self.stop_event)
            log.info("cluster runs Kubernetes %s; live channel on", version)
            self.live.start()
        self.health.start()
        self.agent.start()
        for w in self.watchers:
            w.start()
        self.reporter.start()
        self.link.start()
        log.info("node %s started (jobs namespace %s, completion by %s)", self.config.node_id,
                 self.config.kubernetes.jobs_namespace, self.config.completion.mode)

    def stop(self) -> None:
        log.info("node %s stopping", self.config.node_id)
        self.stop_event.set()
        for w in self.watchers:
            w.interrupt()
        self.link.close()
        self.agent.join(timeout=30)  # and its finishing workers
        if self.live is not None:
            self.live.stop()
        self.reporter.join(timeout=15)
        self.proxy.join(timeout=15)
        for w in self.watchers:
            w.join(timeout=15)
        self.health.close()
        self.ledger.close()
        self.api_client.close()
