"""The live channel's sockets at scale (node/live_sockets.py, issue 15): a followed run holds one
SUB socket and a REQ only while a ping is out; out of sockets, the node follows fewer runs and
the rest later. Real sidecars (node/sidecar.py) in this process, each on its own 127.0.0.x."""
from __future__ import annotations

import logging
import time

import pytest
import zmq

from node import live_frames as F
from node.config import LiveConfig
from node.live import LiveManager
from node.live_sockets import RETRY_SECONDS, budget
from tests.node.test_live import RunningSidecar, report, until


class Node:
    """A LiveManager (on the given context, or its own) with a capturing emit and a SUB on its
    PUB socket."""

    def __init__(self, pub_port: int, rep_port: int, *, context: zmq.Context | None = None,
                 heartbeat: float = 0.05) -> None:
        self.emitted: list[dict] = []
        cfg = LiveConfig(enabled=True, pub_port=pub_port, rep_port=rep_port,
                         heartbeat_seconds=heartbeat, suspect_after=2, fail_after=4,
                         node_pub_host="127.0.0.1", node_pub_port=0)
        self.live = LiveManager(cfg, "node-a", self._emit, context=context)
        self.live.start()
        self.sub = zmq.Context.instance().socket(zmq.SUB)
        self.sub.linger = 0
        self.sub.setsockopt_string(zmq.SUBSCRIBE, "")
        self.sub.connect(f"tcp://127.0.0.1:{self.live.pub_port}")
        self.events: list[tuple[str, str, dict]] = []

    def _emit(self, event: str, data: dict) -> bool:
        if event == "algorithm_progress":
            self.emitted.append(data)
        return True

    def read(self) -> list[tuple[str, str, dict]]:
        while self.sub.poll(20):
            self.events.append(F.decode(self.sub.recv_multipart()))
        return self.events

    def health(self, run_id: int) -> list[str]:
        return [b["state"] for r, k, b in self.read() if k == F.HEALTH and r == str(run_id)]

    def progress(self, run_id: int) -> list[int]:
        return [d["seq"] for d in self.emitted if d["run_id"] == run_id]

    def run(self, run_id: int):
        return self.live.runs.get(run_id)

    def follow(self, run_id: int, ip: str) -> None:
        self.live.run_status(run_id, run_id * 10, "active")
        self.live.pod_event(run_id, "MODIFIED", {
            "metadata": {"name": f"v6-run-{run_id}-abcde"},
            "status": {"phase": "Running", "podIP": ip}})

    def close(self) -> None:
        self.live.stop()
        self.sub.close()


@pytest.fixture
def made():
    """Sidecars and nodes, stopped at the end; sidecars share ports, one 127.0.0.x each."""
    sidecars: list[RunningSidecar] = []
    nodes: list[Node] = []

    class Made:
        @staticmethod
        def sidecars(tmp_path, run_ids, heartbeat=0.05) -> dict[int, RunningSidecar]:
            out, ports = {}, {}
            for i, run_id in enumerate(run_ids):
                s = RunningSidecar(tmp_path / f"progress-{run_id}", run_id=run_id,
                                   host=f"127.0.0.{2 + i}", heartbeat=heartbeat, **ports)
                sidecars.append(s)
                ports = dict(pub_port=s.sidecar.pub_port, rep_port=s.sidecar.rep_port)
                out[run_id] = s
            return out

        @staticmethod
        def node(side: RunningSidecar, **kw) -> Node:
            n = Node(side.sidecar.pub_port, side.sidecar.rep_port, **kw)
            nodes.append(n)
            return n
    yield Made
    for n in nodes:
        n.close()
    for s in sidecars:
        if s.thread.is_alive() or not s.sidecar.pub.closed:
            s.stop()


def one_socket(node: Node, run_id: int) -> bool:
    run = node.run(run_id)
    return run is not None and run.sub is not None and run.req is None \
        and run.ping_sent is None and not run.want_ping


def slip(side: RunningSidecar, message: str) -> None:
    """A progress event the sidecar holds but whose PUB message the node never got (PUB drops
    messages for slow or not yet joined subscribers): only a ping's replay brings it."""
    s = side.sidecar
    s.history.append({"seq": s.seq + 1, "progress": None, "message": message,
                      "time": time.time()})
    s.seq += 1


def test_a_followed_run_holds_one_socket_and_progress_and_gaps_still_arrive(tmp_path, made):
    sides = made.sidecars(tmp_path, [11])
    side = sides[11]
    progress = side.sidecar.s.progress_file
    report(progress, (0.1, "early 1"), (0.2, "early 2"))  # before the node follows the pod
    until(lambda: side.sidecar.seq == 2)
    node = made.node(side)
    node.follow(11, "127.0.0.2")
    until(lambda: node.progress(11) == [1, 2], what="the replay of the connect ping")
    until(lambda: one_socket(node, 11), what="the REQ socket closed after the pong")
    assert node.live.sockets.open == 1
    report(progress, *[(0.2 + i / 10, f"step {i}") for i in range(1, 4)])
    until(lambda: node.progress(11) == [1, 2, 3, 4, 5], what="progress over the SUB alone")
    slip(side, "missed")  # the next heartbeat shows seq 6: a gap
    report(progress, (0.9, "after the gap"))
    until(lambda: node.progress(11) == list(range(1, 8)), what="the gap filled, in order")
    assert [d["message"] for d in node.emitted[5:]] == ["missed", "after the gap"]
    until(lambda: one_socket(node, 11), what="the REQ socket closed again")


def test_the_drain_fetches_the_last_lines_and_ends_on_the_stopped_heartbeat(tmp_path, made):
    # heartbeats far apart: the last line can only come by the drain's ping
    sides = made.sidecars(tmp_path, [12], heartbeat=5.0)
    side = sides[12]
    report(side.sidecar.s.progress_file, (0.5, "half"))
    until(lambda: side.sidecar.seq == 1)
    node = made.node(side, heartbeat=5.0)
    node.follow(12, "127.0.0.2")
    until(lambda: node.progress(12) == [1] and one_socket(node, 12), what="followed, one socket")
    slip(side, "the last line")
    node.live.pod_event(12, "MODIFIED", {"metadata": {"name": "v6-run-12-abcde"},
                                         "status": {"phase": "Succeeded", "podIP": "127.0.0.2"}})
    until(lambda: node.progress(12) == [1, 2], what="the last line, by the drain's ping")
    assert node.run(12).health == "alive" and node.run(12).drain_until is not None
    started = time.monotonic()
    side.stop_event.set()  # the kubelet stops the sidecar: its "stopped" heartbeat ends the drain
    until(lambda: node.run(12).health == "ended", what="the drain ended")
    assert time.monotonic() - started < 5  # by the stopped heartbeat, not the 10 s deadline
    run = node.run(12)
    assert run.sub is None and run.req is None and node.live.sockets.open == 0
    side.thread.join(5)
    assert side.sidecar.delivered == 2  # the node's ping let the sidecar exit at once
    node.live.run_finished(12)
    until(lambda: node.run(12) is None, what="the run forgotten")


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name.startswith("node.live")]


def test_a_tiny_socket_budget_follows_what_it_can_and_the_rest_once_sockets_free(
        tmp_path, made, caplog):
    caplog.set_level(logging.INFO, logger="node.live")
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 4)  # the node's PUB and 3 to sidecars: 2 SUBs and 1 REQ
    sides = made.sidecars(tmp_path, [21, 22, 23])
    for run_id, side in sides.items():
        report(side.sidecar.s.progress_file, (0.5, f"run {run_id}"))
        until(lambda: side.sidecar.seq == 1)
    node = made.node(sides[21], context=ctx)
    for i, run_id in enumerate(sides):
        node.follow(run_id, f"127.0.0.{2 + i}")
    # the two followed runs share the one REQ socket left, in turn
    until(lambda: node.progress(21) == [1] and node.progress(22) == [1], what="two runs replayed")
    until(lambda: node.run(23) and node.run(23).health == "unfollowed", what="run 23 unfollowed")
    until(lambda: "unfollowed" in node.health(23), what="run 23's health published")
    assert node.progress(23) == [] and node.live.sockets.open <= 3
    [warning] = warnings(caplog)
    assert "live.max_sockets 4" in warning and "retried" in warning
    # run 21 ends: its sidecar stops and the node lets its socket go
    node.live.run_finished(21)
    sides[21].stop_event.set()
    until(lambda: node.run(21) is None, what="run 21 drained and forgotten")
    until(lambda: node.progress(23) == [1], timeout=10 + RETRY_SECONDS, what="run 23 followed")
    assert node.health(23)[-1] == "alive"
    until(lambda: one_socket(node, 22) and one_socket(node, 23), what="one socket each")
    report(sides[22].sidecar.s.progress_file, (1.0, "more"))
    until(lambda: node.progress(22) == [1, 2])
    assert len(warnings(caplog)) == 1  # once, not per run nor per loop
    until(lambda: any("following every run again" in r.getMessage() for r in caplog.records),
          timeout=3 * RETRY_SECONDS, what="the all-clear")
    node.close()
    ctx.term()


def test_a_context_out_of_sockets_leaves_runs_unfollowed_until_sockets_free(tmp_path, made,
                                                                            caplog):
    """libzmq's own refusal (EMFILE), not the node's budget: other sockets on the context."""
    caplog.set_level(logging.INFO, logger="node.live")
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 6)
    sides = made.sidecars(tmp_path, [31, 32])
    for side in sides.values():
        report(side.sidecar.s.progress_file, (0.5, "x"))
    node = made.node(sides[31], context=ctx)
    others = [ctx.socket(zmq.PUB) for _ in range(4)]  # with the node's PUB: one socket left
    try:
        node.follow(31, "127.0.0.2")
        node.follow(32, "127.0.0.3")
        until(lambda: node.run(32) and node.run(32).health == "unfollowed" and node.run(31)
              and node.run(31).sub is not None, what="run 31 followed, run 32 not")
        [warning] = warnings(caplog)
        assert "Too many open files" in warning and "live.max_sockets 6" in warning
    finally:
        for sock in others:
            sock.close()
    until(lambda: node.progress(31) == [1] and node.progress(32) == [1],
          timeout=10 + RETRY_SECONDS, what="both runs followed and replayed")
    until(lambda: one_socket(node, 31) and one_socket(node, 32), what="one socket each")
    assert len(warnings(caplog)) == 1
    node.close()
    ctx.term()


def test_the_socket_budget_leaves_open_files_for_the_rest_of_the_node():
    assert budget(65536, 20000) == (20000 - 256) // 2
    assert budget(1023, 1 << 20) == 1022      # libzmq's default
    assert budget(4, None) == 3               # no open-files limit known
    assert budget(65536, 100) == 1            # never zero: one run can always be tried


def test_the_node_context_gets_max_sockets_from_the_configuration():
    from node.config import parse_config
    from node.errors import ConfigError
    base = {"node_id": "a", "api_key": "kkkk", "server_url": "http://127.0.0.1:1",
            "task_dir": "/t"}
    assert parse_config(base, {}).live.max_sockets == 65536
    assert parse_config({**base, "live": {"max_sockets": 5000}}, {}).live.max_sockets == 5000
    for bad in (0, 15, 1 << 21, "many"):
        with pytest.raises(ConfigError) as e:
            parse_config({**base, "live": {"max_sockets": bad}}, {})
        assert [k for k, _ in e.value.problems] == ["live.max_sockets"]
    live = LiveManager(LiveConfig(max_sockets=5000, node_pub_port=0), "node-a",
                       lambda *_: True)
    try:
        live.start()  # its own context: MAX_SOCKETS set before the first socket
        assert live.ctx.get(zmq.MAX_SOCKETS) == 5000 and live.sockets.max_sockets == 5000
    finally:
        live.stop()
    assert live.ctx.closed  # terminated by the live thread once its sockets were closed
