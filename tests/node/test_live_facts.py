"""The sidecar's facts (isolation probe outcome, the pod's resource use) over the live channel to
the node's LiveManager, with real ZeroMQ sockets on 127.0.0.1 (CONTRACTS §9). The probe and the
cgroup reading are injected: their own tests are test_isolation_probe.py and test_cgroup_usage.py."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from node import live_frames as F
from node.isolation_probe import check
from node.sidecar import Sidecar, SidecarError, SidecarSettings
from tests.node.test_live import RUN, nodes, progress_file, report, running_pod, until  # noqa: F401


def probe_outcome(*oks: bool) -> dict:
    checks = [check(f"blocked 10.0.0.{i}:80", ok, "refused" if ok else "connected")
              for i, ok in enumerate(oks)]
    return {"outcome": "passed" if all(oks) else "failed", "checks": checks, "seconds": 0.2}


class ProbingSidecar:
    """A sidecar in a thread whose probe returns when released, with a given pod usage."""

    def __init__(self, progress: Path, outcome: dict, usage: dict, *, drain: float = 3.0):
        self.release = threading.Event()
        self.outcome = outcome

        def probe(settings):
            self.release.wait(30)
            return self.outcome
        self.sidecar = Sidecar(SidecarSettings(run_id=str(RUN), host="127.0.0.1", pub_port=0,
                                               rep_port=0, progress_file=progress,
                                               heartbeat_seconds=0.05, drain_seconds=drain,
                                               isolation_probe=True),
                               probe=probe, usage=lambda: dict(usage))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.sidecar.run, args=(self.stop_event,))
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.stop_event.set()
        self.thread.join(10)
        self.sidecar.close()


@pytest.fixture
def probing():
    made: list[ProbingSidecar] = []

    def make(*args, **kw) -> ProbingSidecar:
        s = ProbingSidecar(*args, **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()
        assert not s.thread.is_alive(), "a sidecar thread was left running"


USED = {"available": True, "scope": "pod", "cpu_seconds": 1.25, "memory_peak_bytes": 4096}


def followed(node) -> None:
    node.live.run_status(RUN, 70, "active")
    node.live.pod_event(RUN, "MODIFIED", running_pod())


def test_the_node_gets_the_probe_outcome_then_the_final_facts_with_the_usage(
        progress_file, probing, nodes):
    outcome = probe_outcome(True, True)
    side = probing(progress_file, outcome, USED)
    node = nodes(side.sidecar.pub_port, side.sidecar.rep_port)
    followed(node)
    until(lambda: side.sidecar.probe_pending, what="the probe started")
    assert node.live.facts(RUN, wait=0) is None  # the probe has not finished
    side.release.set()
    until(lambda: (node.live.facts(RUN, wait=0) or {}).get("isolation") == outcome,
          what="the probe's outcome at the node")
    assert "usage" not in node.live.facts(RUN, wait=0)  # the algorithm still runs
    report(progress_file, (1.0, "done"))
    side.stop()
    facts = node.live.facts(RUN, wait=5)
    assert facts == {"isolation": outcome, "usage": USED}
    assert side.sidecar.facts_fetched  # the sidecar held its end until the node had them
    published = [b for r, k, b in node.read() if k == F.FACTS and r == str(RUN)]
    assert published[-1] == facts  # `python -m node monitor` sees them too


def test_facts_waits_for_the_final_facts_of_a_followed_run(progress_file, probing, nodes):
    outcome = probe_outcome(False, True)
    side = probing(progress_file, outcome, USED)
    side.release.set()
    node = nodes(side.sidecar.pub_port, side.sidecar.rep_port)
    followed(node)
    until(lambda: "isolation" in (node.live.facts(RUN, wait=0) or {}), what="the outcome")
    got: list[dict | None] = []
    reader = threading.Thread(target=lambda: got.append(node.live.facts(RUN, wait=20)))
    reader.start()  # as a finishing worker: the algorithm ended, its sidecar not yet
    side.stop()
    reader.join(25)
    assert got and got[0] == {"isolation": outcome, "usage": USED}


def test_an_algorithm_that_ends_before_the_probe_did_waits_for_it_within_the_drain(
        progress_file, probing, nodes):
    outcome = probe_outcome(True)
    side = probing(progress_file, outcome, USED, drain=20)
    node = nodes(side.sidecar.pub_port, side.sidecar.rep_port)
    followed(node)
    until(lambda: side.sidecar.state == "running" and side.sidecar.probe_pending)
    side.stop_event.set()  # the algorithm ended; the probe still runs
    until(lambda: side.sidecar.state == "running" and side.sidecar.probe_pending,
          what="the sidecar still waiting for its probe")
    side.release.set()
    side.stop()
    assert node.live.facts(RUN, wait=5) == {"isolation": outcome, "usage": USED}


def test_a_probe_that_outlasts_the_drain_is_reported_unfinished(progress_file, probing, nodes):
    side = probing(progress_file, probe_outcome(True), USED, drain=0.3)
    node = nodes(side.sidecar.pub_port, side.sidecar.rep_port)
    followed(node)
    until(lambda: side.sidecar.probe_pending)
    side.stop_event.set()  # never released before the drain is over
    side.thread.join(10)
    assert not side.thread.is_alive()
    facts = side.sidecar.facts
    assert facts["isolation"]["outcome"] == "unfinished" and facts["isolation"]["detail"]
    assert facts["usage"] == USED


def test_a_run_never_followed_has_no_facts_and_is_not_waited_for(nodes):
    node = nodes(1, 2)  # nothing listens there, and no pod is followed
    assert node.live.facts(RUN, wait=30) is None


def test_the_facts_are_forgotten_with_the_run(progress_file, probing, nodes):
    side = probing(progress_file, probe_outcome(True), USED)
    side.release.set()
    node = nodes(side.sidecar.pub_port, side.sidecar.rep_port)
    followed(node)
    side.stop()
    assert node.live.facts(RUN, wait=5)["usage"] == USED
    node.live.run_finished(RUN)
    until(lambda: node.live.facts(RUN, wait=0) is None, what="the facts dropped with the run")


# -- the facts body, as the node checks it ----------------------------------------------------

@pytest.mark.parametrize("body", [
    {"isolation": {"outcome": "maybe", "checks": []}},
    {"isolation": {"outcome": "passed", "checks": [{"name": "dns", "ok": "yes", "detail": ""}]}},
    {"isolation": {"outcome": "passed", "checks": "all"}},
    {"isolation": {"outcome": "passed",
                   "checks": [check(f"c{i}", True, "") for i in range(F.MAX_CHECKS + 1)]}},
    {"usage": {"available": True, "scope": "container", "cpu_seconds": 1.0}},
    {"usage": {"available": True, "scope": "pod", "cpu_seconds": -1.0}},
    {"usage": {"available": True, "scope": "pod", "cpu_seconds": 1.0, "memory_peak_bytes": 1.5}},
    {"usage": {"available": "no"}},
    ["not", "an", "object"],
])
def test_malformed_facts_are_refused(body):
    assert F.facts_body(body) is None


def test_facts_are_cut_to_the_known_keys_and_bounds():
    long = "x" * 1000
    body = {"isolation": {"outcome": "failed", "checks": [check("dns", False, "") | {"detail": long}],
                          "extra": 1, "seconds": 0.5},
            "usage": {"available": False, "reason": long}, "other": {"a": 1}}
    facts = F.facts_body(body)
    assert set(facts) == {"isolation", "usage"}
    assert set(facts["isolation"]) == {"outcome", "checks", "seconds"}
    assert len(facts["isolation"]["checks"][0]["detail"]) == F.MAX_FACT_CHARS
    assert len(facts["usage"]["reason"]) == F.MAX_FACT_CHARS
    assert F.facts_body({}) == {}


def test_the_probe_settings_come_from_the_environment():
    env = {"RUN_ID": "7", "POD_IP": "127.0.0.1", "LIVE_PUB_PORT": "1", "LIVE_REP_PORT": "2"}
    on = SidecarSettings.from_env({**env, "PROXY_HOST": "v6-proxy", "PROXY_PORT": "8080",
                                   "PROBE_BLOCKED": "10.0.0.1:80, 10.0.0.2:81",
                                   "KUBERNETES_SERVICE_HOST": "10.96.0.1",
                                   "KUBERNETES_SERVICE_PORT": "443"})
    assert on.isolation_probe is True  # on in a pod unless the node says otherwise
    assert (on.probe.proxy_host, on.probe.proxy_port) == ("v6-proxy", "8080")
    assert on.probe.blocked == ("10.0.0.1:80", "10.0.0.2:81", "10.96.0.1:443")
    assert SidecarSettings.from_env({**env, "PROBE_ISOLATION": "0"}).isolation_probe is False
    with pytest.raises(SidecarError, match="PROBE_ISOLATION must be 1 or 0"):
        SidecarSettings.from_env({**env, "PROBE_ISOLATION": "yes"})
