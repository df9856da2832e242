"""The live channel with real ZeroMQ sockets on 127.0.0.1: sidecar (node/sidecar.py), the node's
live manager (node/live.py) and the monitor (node/monitor.py), each in this process."""
from __future__ import annotations

import dataclasses

import io
import json
import threading
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import zmq

from localcluster.testing import wait_until
from node import live_frames as F
from node.config import LiveConfig
from node.errors import ClusterError
from node.live import LiveManager, pod_address
from node.live_version import check_cluster_version, version_problem
from node.monitor import main as monitor_main
from node.monitor import render
from node.sidecar import Sidecar, SidecarError, SidecarSettings

RUN = 7


def until(pred, timeout: float = 10.0, what: str = "condition"):
    return wait_until(pred, timeout, what, interval=0.01)


class RunningSidecar:
    """A sidecar serving in a thread, as in its pod, on 127.0.0.1."""

    def __init__(self, progress: Path, pub_port: int = 0, rep_port: int = 0, *,
                 run_id: int = RUN, host: str = "127.0.0.1", heartbeat: float = 0.05) -> None:
        self.sidecar = Sidecar(SidecarSettings(run_id=str(run_id), host=host,
                                               pub_port=pub_port, rep_port=rep_port,
                                               progress_file=progress,
                                               heartbeat_seconds=heartbeat))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.sidecar.run, args=(self.stop_event,))
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        self.sidecar.close()

    def crash(self) -> None:
        """Ends without its "stopped" heartbeat or a drain, as a killed or hung sidecar."""
        self.sidecar.begin_stop = lambda: None
        self.sidecar.s = dataclasses.replace(self.sidecar.s, drain_seconds=0)
        self.stop()


@pytest.fixture
def progress_file(tmp_path):
    return tmp_path / "progress"


def report(path: Path, *steps: tuple[float | None, str]) -> None:
    with open(path, "a") as f:
        for fraction, message in steps:
            line = {"time": time.time(), "progress": fraction, "message": message}
            f.write(json.dumps(line) + "\n")


@pytest.fixture
def sidecars():
    made: list[RunningSidecar] = []

    def make(progress: Path, **kw) -> RunningSidecar:
        s = RunningSidecar(progress, **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        if s.thread.is_alive() or not s.sidecar.pub.closed:
            s.stop()


def request(port: int, frames: list[bytes]) -> tuple[str, str, dict]:
    ctx = zmq.Context.instance()
    req = ctx.socket(zmq.REQ)
    req.linger = 0
    try:
        req.connect(f"tcp://127.0.0.1:{port}")
        req.send_multipart(frames)
        assert req.poll(5000), "no answer from the sidecar"
        return F.decode(req.recv_multipart())
    finally:
        req.close()


# -- sidecar ----------------------------------------------------------------------------------

def test_the_sidecar_answers_ping_with_its_state_and_replays_missed_progress(progress_file,
                                                                           sidecars):
    side = sidecars(progress_file)
    report(progress_file, (0.25, "a"), (0.5, "b"), (None, "c"))
    until(lambda: side.sidecar.seq == 3, what="three lines read")
    rid, kind, body = request(side.sidecar.rep_port, F.encode(str(RUN), F.PING, {"after": 1}))
    assert (rid, kind, body["state"], body["seq"]) == (str(RUN), F.PONG, "running", 3)
    assert [(e["seq"], e["progress"], e["message"]) for e in body["progress"]] == \
        [(2, 0.5, "b"), (3, None, "c")]


def test_the_sidecar_publishes_progress_in_order_and_heartbeats(progress_file, sidecars):
    side = sidecars(progress_file)
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt_string(zmq.SUBSCRIBE, "")
    sub.connect(f"tcp://127.0.0.1:{side.sidecar.pub_port}")
    try:
        until(lambda: sub.poll(100) and F.decode(sub.recv_multipart())[1] == F.HEARTBEAT,
              what="a heartbeat (the subscription is up)")
        report(progress_file, *[(i / 10, f"step {i}") for i in range(1, 6)])
        seen = []

        def collect():
            while sub.poll(50):
                _, kind, body = F.decode(sub.recv_multipart())
                if kind == F.PROGRESS:
                    seen.append((body["seq"], body["message"]))
            return len(seen) >= 5
        until(collect, what="five progress events")
        assert seen == [(i, f"step {i}") for i in range(1, 6)]
    finally:
        sub.close()


def test_the_sidecar_skips_bad_and_oversized_lines_and_waits_for_partial_ones(progress_file,
                                                                            sidecars):
    side = sidecars(progress_file)
    with open(progress_file, "ab") as f:
        f.write(b"not json\n" + b'{"message": "' + b"x" * (2 * F.MAX_LINE_BYTES) + b'"}\n')
        f.write(b'{"progress": 7, "message": "clamped"}\n{"progress": 0.5, "mess')
    until(lambda: side.sidecar.seq == 1, what="the one good line")
    with open(progress_file, "ab") as f:
        f.write(b'age": "completed later"}\n')
    until(lambda: side.sidecar.seq == 2, what="the completed partial line")
    events = list(side.sidecar.history)
    assert [(e["progress"], e["message"]) for e in events] == \
        [(1.0, "clamped"), (0.5, "completed later")]


@pytest.mark.parametrize("frames, error", [
    ([b"7", b"ping"], "expected 3 frames"),
    ([b"8", b"ping", b"{}"], "wrong run id"),
    ([b"7", b"reboot", b"{}"], "unknown request"),
    ([b"7", b"ping", b"[1]"], "not a JSON object"),
])
def test_the_sidecar_answers_bad_requests_with_an_error(progress_file, sidecars, frames, error):
    side = sidecars(progress_file)
    _, kind, body = request(side.sidecar.rep_port, frames)
    assert kind == F.ERROR and error in body["error"]


def test_sidecar_settings_come_from_the_environment_with_clear_errors():
    s = SidecarSettings.from_env({"RUN_ID": "12", "POD_IP": "127.0.1.5", "LIVE_PUB_PORT": "7000",
                                  "PROGRESS_FILE": "/app/live/p"})
    assert (s.run_id, s.host, s.pub_port, s.rep_port, str(s.progress_file)) == \
        ("12", "127.0.1.5", 7000, 5556, "/app/live/p")
    with pytest.raises(SidecarError) as e:
        SidecarSettings.from_env({"RUN_ID": "x", "LIVE_REP_PORT": "70000"})
    assert "RUN_ID" in str(e.value) and "POD_IP" in str(e.value) and "LIVE_REP_PORT" in str(e.value)


# -- node side ----------------------------------------------------------------------------------

class Node:
    """A LiveManager with a capturing emit and a SUB on its PUB socket."""

    def __init__(self, pub_port: int, rep_port: int) -> None:
        self.emitted: list[tuple[str, dict]] = []
        cfg = LiveConfig(enabled=True, pub_port=pub_port, rep_port=rep_port,
                         heartbeat_seconds=0.05, suspect_after=2, fail_after=4,
                         node_pub_host="127.0.0.1", node_pub_port=0)
        self.live = LiveManager(cfg, "node-a", self._emit)
        self.live.start()
        self.sub = zmq.Context.instance().socket(zmq.SUB)
        self.sub.linger = 0
        self.sub.setsockopt_string(zmq.SUBSCRIBE, "")
        self.sub.connect(f"tcp://127.0.0.1:{self.live.pub_port}")
        self.events: list[tuple[str, str, dict]] = []

    def _emit(self, event: str, data: dict) -> bool:
        self.emitted.append((event, data))
        return True

    def read(self) -> list[tuple[str, str, dict]]:
        while self.sub.poll(20):
            self.events.append(F.decode(self.sub.recv_multipart()))
        return self.events

    def health(self) -> list[str]:
        return [b["state"] for r, k, b in self.read() if k == F.HEALTH and r == str(RUN)]

    def progress(self) -> list[int]:
        return [d["seq"] for e, d in self.emitted if e == "algorithm_progress"]

    def close(self) -> None:
        self.live.stop()
        self.sub.close()


@pytest.fixture
def nodes():
    made: list[Node] = []

    def make(pub_port: int, rep_port: int) -> Node:
        n = Node(pub_port, rep_port)
        made.append(n)
        return n
    yield make
    for n in made:
        n.close()


def running_pod(ip: str = "127.0.0.1") -> dict:
    return {"metadata": {"name": f"v6-run-{RUN}-abcde"},
            "status": {"phase": "Running", "podIP": ip}}


def test_the_node_forwards_progress_once_and_in_order_also_what_came_before_it_connected(
        progress_file, sidecars, nodes):
    side = sidecars(progress_file)
    report(progress_file, (0.1, "early 1"), (0.2, "early 2"))  # before the node follows the pod
    until(lambda: side.sidecar.seq == 2)
    node = nodes(side.sidecar.pub_port, side.sidecar.rep_port)
    node.live.run_status(RUN, 70, "active")
    node.live.pod_event(RUN, "MODIFIED", running_pod())
    until(lambda: node.progress() == [1, 2], what="the replayed early events")
    report(progress_file, *[(0.2 + i / 10, f"step {i}") for i in range(1, 6)])
    until(lambda: len(node.progress()) == 7, what="all seven events")
    assert node.progress() == list(range(1, 8))
    first = node.emitted[0][1]
    assert first == {"node_id": "node-a", "run_id": RUN, "task_id": 70, "seq": 1,
                     "progress": 0.1, "message": "early 1", "time": first["time"]}
    until(lambda: any(k == F.SNAPSHOT and b["runs"] and b["runs"][0]["health"] == "alive"
                      and b["runs"][0]["progress"] == 0.7 for r, k, b in node.read()),
          what="a snapshot showing the run alive at 70%")


def _followed_after_one_event(progress_file, sidecars, nodes):
    """A sidecar that published one event, and a node that follows it and has that event."""
    side = sidecars(progress_file)
    report(progress_file, (0.5, "half"))
    node = nodes(side.sidecar.pub_port, side.sidecar.rep_port)
    node.live.run_status(RUN, 70, "active")
    node.live.pod_event(RUN, "MODIFIED", running_pod())
    until(lambda: node.progress() == [1], what="first event")
    return side, node


def test_the_node_flags_a_silent_sidecar_and_clears_the_flag_when_it_answers_again(
        progress_file, sidecars, nodes):
    side, node = _followed_after_one_event(progress_file, sidecars, nodes)
    ports = dict(pub_port=side.sidecar.pub_port, rep_port=side.sidecar.rep_port)
    side.crash()  # the sidecar stops answering
    until(lambda: node.health()[-2:] == ["suspected", "failed"], what="suspected, then failed")
    again = sidecars(progress_file, **ports)  # restarted: reads the file from the start
    report(progress_file, (1.0, "done"))
    until(lambda: node.health()[-1] == "alive", what="alive again")
    until(lambda: node.progress() == [1, 2], what="the new event, without repeats")
    assert again.sidecar.seq == 2


def test_the_node_publishes_snapshots_that_the_monitor_lists(progress_file, sidecars, nodes):
    side = sidecars(progress_file)
    node = nodes(side.sidecar.pub_port, side.sidecar.rep_port)
    node.live.run_status(RUN, 70, "active")
    node.live.run_status(8, 80, "pending")
    node.live.pod_event(RUN, "MODIFIED", running_pod())
    report(progress_file, (0.5, "halfway there"))
    until(lambda: node.progress() == [1])
    snapshot = until(lambda: [b for r, k, b in node.read()
                              if k == F.SNAPSHOT and len(b["runs"]) == 2 and b["runs"][0]["seq"]],
                     what="a snapshot with both runs")[-1]
    assert [(r["run_id"], r["status"], r["health"]) for r in snapshot["runs"]] == \
        [(RUN, "active", "alive"), (8, "pending", "waiting")]
    table = render(snapshot)
    assert "node node-a: 2 run(s)" in table
    assert any(line.split()[:3] == [str(RUN), "70", "active"] and "50%" in line
               and "halfway there" in line for line in table.splitlines())
    out = io.StringIO()
    with redirect_stdout(out):
        code = monitor_main(["--connect", f"tcp://127.0.0.1:{node.live.pub_port}", "--once"])
    assert code == 0 and "RUN" in out.getvalue() and "pending" in out.getvalue()
    node.live.run_finished(8)
    until(lambda: any(k == F.STATE and b.get("gone") and b["run_id"] == 8
                      for r, k, b in node.read()), what="run 8 gone")


def test_the_monitor_says_when_no_node_answers(capsys):
    with zmq.Context.instance().socket(zmq.PUB) as silent:
        port = silent.bind_to_random_port("tcp://127.0.0.1")
        assert monitor_main(["--connect", f"tcp://127.0.0.1:{port}", "--once",
                             "--timeout", "0.3"]) == 1
    assert "no snapshot" in capsys.readouterr().err


def test_a_pod_is_followed_only_while_it_runs():
    assert pod_address(running_pod("127.0.1.4")) == "127.0.1.4"
    assert pod_address({"status": {"phase": "Pending", "podIP": "127.0.1.4"}}) is None
    assert pod_address({"metadata": {"deletionTimestamp": "x"},
                        "status": {"phase": "Running", "podIP": "127.0.1.4"}}) is None


@pytest.mark.parametrize("major, minor, ok", [("1", "28", False), ("1", "29", True),
                                              ("1", "30+", True), ("2", "0", True),
                                              ("", "", False)])
def test_the_cluster_version_check(major, minor, ok):
    if ok:
        assert version_problem(major, minor, f"v{major}.{minor}")
    else:
        with pytest.raises(ClusterError) as e:
            version_problem(major, minor, None)
        assert "Kubernetes" in str(e.value) or "version" in str(e.value)


def test_an_old_cluster_is_refused_with_a_clear_message():
    with pytest.raises(ClusterError) as e:
        version_problem("1", "27", "v1.27.3")
    assert "v1.27.3" in str(e.value) and "1.29 or newer" in str(e.value) \
        and "live.enabled: false" in str(e.value)


@pytest.fixture
def fake_version_server():
    """An HTTP server on 127.0.0.1 answering /version like a Kubernetes 1.28 API server."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps({"major": "1", "minor": "28", "gitVersion": "v1.28.4"}).encode()
            self.send_response(200 if self.path.rstrip("/") == "/version" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_the_node_reads_the_cluster_version_and_refuses_an_old_one(fake_version_server):
    from kubernetes import client as k8s
    configuration = k8s.Configuration()
    configuration.host = fake_version_server
    api = k8s.ApiClient(configuration)
    try:
        with pytest.raises(ClusterError) as e:
            check_cluster_version(api)
    finally:
        api.close()
    assert "Kubernetes v1.28.4" in str(e.value) and "1.29 or newer" in str(e.value)


def test_the_live_section_of_the_configuration():
    from node.config import parse_config
    from node.errors import ConfigError
    base = {"node_id": "a", "api_key": "kkkk", "server_url": "http://127.0.0.1:1",
            "task_dir": "/t"}
    assert parse_config(base, {}).live == LiveConfig()
    assert LiveConfig().enabled is True  # every pod gets the sidecar unless turned off
    live = parse_config({**base, "live": {"enabled": True, "heartbeat_seconds": 0.2,
                                          "node_pub_port": 0}}, {}).live
    assert (live.enabled, live.heartbeat_seconds, live.node_pub_port) == (True, 0.2, 0)
    with pytest.raises(ConfigError) as e:
        parse_config({**base, "live": {"enabled": "yes", "pub_port": 6000, "rep_port": 6000,
                                       "suspect_after": 4, "fail_after": 3, "hartbeat": 1,
                                       "node_pod_labels": {"app": "-bad-"}}}, {})
    keys = [k for k, _ in e.value.problems]
    assert keys == ["live.enabled", "live.node_pod_labels.app", "live.hartbeat",
                    "live.rep_port", "live.fail_after"]
    assert "did you mean 'heartbeat_seconds'" in str(e.value)


def test_a_run_whose_pod_shows_up_before_its_status_is_followed_too(progress_file, sidecars,
                                                                    nodes):
    """After a node restart an adopted run's pod may be seen before the run's first status."""
    side = sidecars(progress_file)
    report(progress_file, (0.3, "x"))
    node = nodes(side.sidecar.pub_port, side.sidecar.rep_port)
    node.live.pod_event(RUN, "MODIFIED", running_pod())
    until(lambda: node.progress() == [1], what="the event of the adopted run")
    node.live.run_status(RUN, 70, "active")
    node.live.run_finished(RUN)
    until(lambda: any(k == F.STATE and b.get("gone") and b["run_id"] == RUN and b["task_id"] == 70
                      for r, k, b in node.read()), what="the run drained and gone")


def test_a_sidecar_that_said_it_stopped_is_not_flagged_while_its_pod_ends(progress_file,
                                                                          sidecars, nodes):
    side, node = _followed_after_one_event(progress_file, sidecars, nodes)
    report(progress_file, (1.0, "done"))
    side.stop()  # the kubelet stops it: "stopped", then it waits until the node has event 2
    assert side.sidecar.drained and node.progress() == [1, 2]
    # silence for longer than fail_after (4 beats of 0.05 s): the pod's end has not come yet
    silent_until = time.monotonic() + 0.6
    until(lambda: time.monotonic() >= silent_until, what="a silence past fail_after")
    assert "suspected" not in node.health() and "failed" not in node.health()


def test_between_passes_a_run_touched_by_an_input_is_handled_at_once(progress_file, sidecars):
    """With the clock frozen, the pass over every run comes once and never again: what the node
    still does (follow the pod, ping for the replay, drain at the end) comes from the run being
    touched (pod_event, run_finished) or from its sockets' input."""
    side = sidecars(progress_file)
    report(progress_file, (0.1, "before the node followed"))
    until(lambda: side.sidecar.seq == 1)
    emitted: list[dict] = []
    cfg = LiveConfig(enabled=True, pub_port=side.sidecar.pub_port,
                     rep_port=side.sidecar.rep_port, heartbeat_seconds=1.0,
                     node_pub_host="127.0.0.1", node_pub_port=0)
    live = LiveManager(cfg, "node-a", lambda e, d: emitted.append(d) or True, clock=lambda: 100.0)
    assert live.pass_interval == 0.25  # a quarter heartbeat interval
    live.start()
    try:
        live.run_status(RUN, 70, "active")
        live.pod_event(RUN, "MODIFIED", running_pod())
        until(lambda: [d["seq"] for d in emitted] == [1], what="the replay, from the first ping")
        report(progress_file, (1.0, "last"))
        side.stop()  # its "stopped" heartbeat: the node pings for the last line, then drains
        assert side.sidecar.drained
        live.run_finished(RUN)
        until(lambda: RUN not in live.runs, what="the run forgotten")
        assert [d["seq"] for d in emitted] == [1, 2]
    finally:
        live.stop()
