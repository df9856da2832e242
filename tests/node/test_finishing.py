"""A run's ending through the finishing pool (node/finishing.py, node/workpool.py), with the agent's
thread and the pool's workers running for real over small doubles of the cluster, the ledger and
the workspace that write down what happened in one journal:

- every result is queued exactly once, also when completion events come again;
- a Job and its files are removed only after the result is in the outbox;
- results waiting together are written in one transaction; one finished before is only cleaned;
- a failing ledger holds results (and their Jobs and files) back until it works again;
- the agent keeps handling commands and kills while the pool is slow;
- stopping while runs finish neither hangs nor loses a result: what was not stored yet is ended
  again by a restarted agent, from the ledger and the cluster.
"""
from __future__ import annotations

import copy
import threading
from pathlib import Path

import pytest

from localcluster.stack import wait_for
from node.agent import Agent
from node.config import parse_config
from node.errors import OutboxError, TransientClusterError
from node.finishing import Gathered
from node.ledger import CREATED, FINISHED, Ledger
from node.models import TaskStatus
from node.proxy_address import ProxyAddress
from node.runs import Run
from node.workspace import Workspace
from tests.reliability.harness import FakeCluster, FakeReporter, _event

JOB = "v6-run-{}-node-a"


class Journal:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[str, int]] = []

    def add(self, what: str, run_id: int) -> None:
        with self.lock:
            self.entries.append((what, run_id))

    def of(self, run_id: int) -> list[str]:
        with self.lock:
            return [what for what, rid in self.entries if rid == run_id]


class Cluster(FakeCluster):
    """The harness's fake, safe for several threads; listing pods can be held on a gate."""

    def __init__(self, journal: Journal, stopping) -> None:
        super().__init__()
        self.journal = journal
        self.stopping = stopping
        self.lock = threading.RLock()
        self.pods_gate = threading.Event()
        self.pods_gate.set()
        self.delete_gate = threading.Event()
        self.delete_gate.set()
        self.pod_lists = 0

    def create_job(self, job):
        with self.lock:
            return super().create_job(job)

    def get_job(self, name):
        with self.lock:
            return super().get_job(name)

    def delete_job(self, name, grace_seconds=None):
        self.delete_gate.wait()
        if self.stopping():  # the call cut by the node's end (JobOps retries, then gives up)
            raise TransientClusterError(f"delete job {name}: connection reset")
        self.journal.add("job deleted", int(name.split("-")[2]))
        with self.lock:
            return super().delete_job(name, grace_seconds)

    def list_objects(self, kind, selector):
        if kind == "pods":
            self.pods_gate.wait()
            with self.lock:
                self.pod_lists += 1
        with self.lock:
            return super().list_objects(kind, selector)


class RecordingLedger(Ledger):
    def __init__(self, path: Path, journal: Journal) -> None:
        super().__init__(path)
        self.journal = journal
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[list[int]] = []

    def finish_many(self, results):
        self.gate.wait()
        if self.fail:
            raise OutboxError("ledger write failed: database or disk is full")
        done = super().finish_many(results)
        self.batches.append([r.run_id for r in results])
        for r, new in zip(results, done):
            if new:
                self.journal.add("stored", r.run_id)
        return done


class RecordingWorkspace(Workspace):
    def __init__(self, config, journal: Journal) -> None:
        super().__init__(config)
        self.journal = journal

    def remove(self, run_id: int) -> None:
        self.journal.add("files removed", run_id)
        super().remove(run_id)


class Node:
    """One agent with its pool over the doubles, its thread running (with workers 0 it is not
    started: the test calls it). `restart()` makes a new agent on the same ledger file, cluster
    and task_dir, as a restarted node process would find them."""

    def __init__(self, root: Path, workers: int = 3, queue_size: int = 1000) -> None:
        self.root = root
        self.journal = Journal()
        self.config = parse_config({
            "node_id": "node-a", "api_key": "node-key-not-for-logs",
            "server_url": "http://127.0.0.1:9", "task_dir": str(root / "tasks"),
            "images": {"allowed": ["v6-demo/*"]}, "job": {"deadline_seconds": 300},
            "finishing": {"workers": workers, "queue_size": queue_size}}, {})
        self.cluster = Cluster(self.journal, lambda: self.stop.is_set())
        self.workspace = RecordingWorkspace(self.config, self.journal)
        self._new_agent()

    def _new_agent(self) -> None:
        self.stop = threading.Event()
        self.ledger = RecordingLedger(self.root / "tasks" / "node-ledger.sqlite", self.journal)
        self.reporter = FakeReporter()
        self.agent = Agent(self.config, self.cluster, self.ledger, self.workspace, self.reporter,
                           self.stop, proxy=lambda: ProxyAddress("10.96.0.10", 8080, 8080))
        if self.config.finishing.workers:  # else a test calls the agent as its thread would
            self.agent.start()

    def restart(self) -> None:
        self.shutdown()
        self._new_agent()
        # what the watchers deliver first: a full list of Jobs and of Pods
        with self.cluster.lock:
            jobs = [copy.deepcopy(j) for j in self.cluster.jobs.values()]
        self.agent.sink(("sync", "jobs", jobs))
        self.agent.sink(("sync", "pods", []))

    def shutdown(self, timeout: float = 10) -> None:
        self.stop.set()
        if self.config.finishing.workers:
            self.agent.join(timeout)
        assert not self.agent.is_alive(), "the agent did not stop"
        assert not any(t.is_alive() for t in self.agent.pool._threads), "a worker did not stop"
        self.ledger.close()

    # -- driving ---------------------------------------------------------------------------------
    def command(self, run_id: int) -> None:
        self.agent.submit_command({"run_id": run_id, "task_id": run_id, "image": "v6-demo/avg",
                                   "databases": [], "token": "t0ken-for-tests",
                                   "input": {"method": "avg"}})

    def created(self, *run_ids: int) -> None:
        """Wait for the runs' Jobs, then tell the agent it sees them (as the watcher would)."""
        for run_id in run_ids:
            wait_for(lambda: JOB.format(run_id) in self.cluster.jobs, 10, f"job {run_id}")
            self.agent.sink(("event", "jobs", _event("ADDED", self.cluster.get_job(JOB.format(run_id)))))

    def complete(self, run_id: int) -> None:
        out = Path(self.workspace.paths(run_id).output)
        (out / "output").write_text(f"out-{run_id}")
        with self.cluster.lock:
            job = self.cluster.jobs[JOB.format(run_id)]
            job["status"] = {"succeeded": 1, "conditions": [
                {"type": "Complete", "status": "True", "reason": "Completed"}]}
            event = _event("MODIFIED", job)
        self.agent.sink(("event", "jobs", event))

    def kill(self, data: dict) -> dict:
        return self.agent.kill(data, timeout=10)

    def results(self) -> dict[int, dict]:
        return {r["run_id"]: r for r in self.ledger.pending_results(limit=1_000_000)}

    def settled(self, run_ids) -> bool:
        """Every run stored and cleaned up, and nothing left to do in the pool."""
        return all(self.journal.of(r)[-1:] == ["files removed"] for r in run_ids) \
            and self.agent.pool.busy() == 0 and not self.agent.finishing.runs


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path)
    yield n
    if n.agent.is_alive():
        for gate in (n.ledger.gate, n.cluster.pods_gate, n.cluster.delete_gate):
            gate.set()
        n.shutdown()


def started(node: Node, run_ids) -> None:
    for r in run_ids:
        node.command(r)
    node.created(*run_ids)


def test_each_result_is_stored_once_and_its_job_and_files_removed_only_after(node):
    runs = range(1, 41)
    started(node, runs)
    for r in runs:
        node.complete(r)
        if r % 3 == 0:  # the same news again (a relist, a second watch event)
            node.agent.sink(("event", "jobs", _event("MODIFIED", node.cluster.get_job(JOB.format(r)))))
    wait_for(lambda: node.settled(runs), 20, "every run to be stored and cleaned up")
    results = node.results()
    assert sorted(results) == list(runs)
    for r in runs:
        assert (results[r]["status"], results[r]["data"]) == ("completed", f"out-{r}")
        assert node.journal.of(r) == ["stored", "job deleted", "files removed"], r
        assert JOB.format(r) not in node.cluster.jobs
        assert node.ledger.get(r).state == FINISHED
    finals = [s for s in node.reporter.statuses if s.status == "completed"]
    assert sorted(s.run_id for s in finals) == list(runs)  # reported once each
    assert node.cluster.pod_lists == len(runs)  # the pods read again once per run, by the pool
    assert node.reporter.kicks >= 1


def test_results_waiting_together_are_stored_in_one_transaction(node):
    runs = range(1, 21)
    started(node, runs)
    node.cluster.pods_gate.clear()
    for r in runs:
        node.complete(r)
    wait_for(lambda: len(node.agent.finishing.runs) == len(runs), 10, "every run to be ending")
    node.ledger.gate.clear()  # the first write waits; the other results pile up meanwhile
    node.cluster.pods_gate.set()
    wait_for(lambda: node.agent.pool.busy() == 0, 10, "every result read and waiting")
    node.ledger.gate.set()
    wait_for(lambda: node.settled(runs), 20, "every run to be stored and cleaned up")
    # the write that waited took what was queued when it began (all of them, if the workers
    # were quicker than the agent thread); everything that piled up behind it went in one more
    assert 1 <= len(node.ledger.batches) <= 2, node.ledger.batches
    assert sorted(sum(node.ledger.batches, [])) == list(runs)
    assert sorted(node.results()) == list(runs)


def test_the_agent_answers_while_the_pool_is_slow_and_ignores_news_of_a_run_ending(node, caplog):
    started(node, [1, 2])
    node.cluster.pods_gate.clear()  # every pool worker that reads pods waits
    node.complete(1)
    wait_for(lambda: 1 in node.agent.finishing.runs, 10, "run 1 to be ending")
    # news of the ending run meanwhile: neither adopted again nor finished twice
    node.agent.sink(("event", "jobs", _event("MODIFIED", node.cluster.get_job(JOB.format(1)))))
    node.agent.sink(("sync", "jobs", [node.cluster.get_job(JOB.format(r)) for r in (1, 2)]))
    assert node.kill({"run_id": 1}) == {"killed": [], "not_running": [1], "unknown": []}
    assert node.kill({"run_id": 2}) == {"killed": [2], "not_running": [], "unknown": []}
    node.command(3)
    node.created(3)
    assert 1 not in node.agent.runs and node.ledger.get(1).state == CREATED
    assert JOB.format(1) in node.cluster.jobs  # not stored yet: the Job stays
    node.cluster.pods_gate.set()
    node.complete(3)
    wait_for(lambda: node.settled([1, 2, 3]), 20, "every run to be stored and cleaned up")
    results = node.results()
    assert {r: results[r]["status"] for r in results} == {
        1: "completed", 2: "killed by user", 3: "completed"}
    assert [s.status for s in node.reporter.statuses if s.run_id == 1].count("completed") == 1
    assert "adopting" not in caplog.text


def test_a_failing_ledger_holds_results_jobs_and_files_back_and_retries(node):
    runs = [1, 2, 3]
    started(node, runs)
    node.ledger.fail = True
    for r in runs:
        node.complete(r)
    wait_for(lambda: len(node.agent.finishing.unstored) == 3, 10, "the results to be held back")
    assert set(node.agent.finishing.uncleaned) == set(runs)
    for r in runs:
        assert JOB.format(r) in node.cluster.jobs
        assert (Path(node.workspace.paths(r).output) / "output").exists()
        assert node.ledger.get(r).state == CREATED
        assert node.journal.of(r) == []
    node.ledger.fail = False  # space again: the next check stores each once, then cleans up
    wait_for(lambda: node.settled(runs), 20, "the held-back runs to be stored and cleaned up")
    results = node.results()
    assert [results[r]["data"] for r in runs] == ["out-1", "out-2", "out-3"]
    for r in runs:
        assert node.journal.of(r) == ["stored", "job deleted", "files removed"]
    assert not node.agent.finishing.unstored and not node.agent.finishing.uncleaned


def test_stopping_while_runs_finish_neither_hangs_nor_loses_a_result(tmp_path):
    node = Node(tmp_path, workers=8)
    runs = range(1, 31)
    started(node, runs)
    for r in range(1, 11):
        node.complete(r)
    wait_for(lambda: node.settled(range(1, 11)), 20, "the first runs to be done")
    # runs 11-15 are stored but their Jobs not yet deleted when the node stops; runs 16-30 are
    # caught between their end and their result
    node.cluster.delete_gate.clear()
    for r in range(11, 16):
        node.complete(r)
    wait_for(lambda: all(node.journal.of(r) == ["stored"] for r in range(11, 16)), 10,
             "runs 11-15 to be stored")
    node.cluster.pods_gate.clear()
    for r in range(16, 31):
        node.complete(r)
    wait_for(lambda: len(node.agent.finishing.runs) == 20, 10, "20 runs to be ending")
    stopper = threading.Thread(target=node.shutdown)
    stopper.start()
    wait_for(lambda: node.stop.is_set(), 5, "the stop")
    node.cluster.pods_gate.set()  # the workers' API calls return (a real one has a timeout)
    node.cluster.delete_gate.set()
    stopper.join(15)
    assert not stopper.is_alive(), "the node hung while stopping"
    ledger = Ledger(node.root / "tasks" / "node-ledger.sqlite")
    try:
        for r in range(11, 31):
            # stored (11-15, and any whose result the agent took before it saw the stop) or
            # not; either way its Job and output are still there, to end it again or remove them
            assert ledger.get(r).state in ((FINISHED,) if r <= 15 else (CREATED, FINISHED)), r
            assert JOB.format(r) in node.cluster.jobs, r
            assert (Path(node.workspace.paths(r).output) / "output").exists(), r
    finally:
        ledger.close()
    node.restart()
    wait_for(lambda: node.settled(runs) and not node.cluster.jobs, 20,
             "the restarted agent to end the rest")
    results = node.results()
    assert sorted(results) == list(runs)
    assert all(results[r]["data"] == f"out-{r}" for r in runs)
    stored = [rid for what, rid in node.journal.entries if what == "stored"]
    assert sorted(stored) == list(runs), "a result stored twice or never"
    for r in range(11, 16):  # only cleaned up after the restart
        assert node.journal.of(r) == ["stored", "job deleted", "files removed"], r
    node.shutdown()


def test_a_batch_with_a_run_finished_before_stores_the_others_and_cleans_up_all(tmp_path):
    node = Node(tmp_path, workers=0)  # the pool inline: each step within the call, in order
    try:
        runs = [1, 2, 3]
        for r in runs:
            node.agent._on_command({"run_id": r, "task_id": r, "image": "v6-demo/avg",
                                    "databases": [], "token": "t0ken", "input": {}})
        from node.models import Result
        assert node.ledger.finish(Result(run_id=2, task_id=2, parent_id=None, status="failed",
                                         data="", logs="before a restart"))
        items = [Gathered(Run(r, r, None, job_name=JOB.format(r)), TaskStatus.COMPLETED, "",
                          "logs", f"out-{r}") for r in runs]
        node.agent.finishing.gathered(items)
        assert node.ledger.batches[-1] == runs
        results = node.results()
        assert (results[1]["data"], results[2]["status"], results[3]["data"]) == (
            "out-1", "failed", "out-3")
        for r in runs:
            assert JOB.format(r) not in node.cluster.jobs, r
        assert not node.agent.finishing.runs
    finally:
        node.shutdown()


def test_a_failing_batch_holds_each_back_and_each_is_retried_alone(tmp_path):
    node = Node(tmp_path, workers=0)
    try:
        for r in (1, 2):
            node.agent._on_command({"run_id": r, "task_id": r, "image": "v6-demo/avg",
                                    "databases": [], "token": "t0ken", "input": {}})
        node.ledger.fail = True
        items = [Gathered(Run(r, r, None, job_name=JOB.format(r)), TaskStatus.CRASHED, "x")
                 for r in (1, 2)]
        node.agent.finishing.gathered(items)
        assert set(node.agent.finishing.unstored) == {1, 2}
        assert JOB.format(1) in node.cluster.jobs and JOB.format(2) in node.cluster.jobs
        node.agent._retry_held_back()
        assert set(node.agent.finishing.unstored) == {1, 2}  # still failing: kept
        node.ledger.fail = False
        node.agent._retry_held_back()
        assert node.ledger.batches[-2:] == [[1], [2]]
        assert sorted(node.results()) == [1, 2]
        assert not node.cluster.jobs and not node.agent.finishing.runs
    finally:
        node.shutdown()


def test_taking_results_from_the_queue_keeps_its_order():
    from node import agent as agent_module
    a = Agent.__new__(Agent)
    import queue
    a.queue, a._held = queue.Queue(), None
    for item in [("gathered", ["a"]), ("gathered", ["b", "c"]), ("command", {}),
                 ("gathered", ["d"])]:
        a.queue.put(item)
    assert a._next() == ("gathered", ["a", "b", "c"])
    assert a._next() == ("command", {})
    assert a._next() == ("gathered", ["d"])
    for i in range(agent_module.STORE_BATCH + 5):
        a.queue.put(("gathered", [i]))
    assert len(a._next()[1]) == agent_module.STORE_BATCH
    assert len(a._next()[1]) == 5


def test_the_events_of_a_podless_job_are_read_by_the_pool(node):
    from tests.node.test_agent_waiting import _refusal
    started(node, [1])
    node.cluster.events.append(_refusal(JOB.format(1)))
    run = wait_for(lambda: (node.agent.runs.get(1) if node.agent.runs.get(1) is not None
                            and node.agent.runs[1].podless_since is not None else None),
                   10, "the run to be seen without a pod")
    run.podless_since -= 60  # as if long ago: the next check reads the Job's events
    wait_for(lambda: node.settled([1]), 10, "the refused run to end")
    assert node.results()[1]["status"] == TaskStatus.START_FAILED.value
    assert node.cluster.job_event_reads == [JOB.format(1)]
