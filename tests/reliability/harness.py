"""The node's real pure core and agent, in one process, with a fake cluster and server link.

The agent's thread is not started: a test calls `Agent._on_command` and `_on_object` itself, which
is exactly what the agent's thread does with its queue items, minus the queue. The finishing pool
has no workers unless a test asks (`finishing={"workers": n}`): a run's ending then happens within
the call that ended it, in order (tests/node/test_finishing.py drives the pool itself).
"""
from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from node.agent import Agent
from node.config import parse_config
from node.errors import ConflictError, NotFoundError
from node.ledger import Ledger
from node.objects import slim_item
from node.proxy_address import ProxyAddress
from node.workspace import Workspace
from tests.reliability.payloads import ALLOWED, DATABASES


class FakeCluster:
    """Keeps Jobs in a dict; deleting a Job also 'deletes' its pods (there are none)."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.created: list[str] = []
        self.rv = 0
        self.pods: dict[str, dict] = {}  # none unless a test puts some there
        self.events: list[dict] = []  # core/v1 Events, as listed by field selector
        self.job_event_reads: list[str] = []

    def create_job(self, job: dict) -> dict:
        name = job["metadata"]["name"]
        if name in self.jobs:
            raise ConflictError(f"create job {name}: 409 AlreadyExists")
        self.rv += 1
        stored = copy.deepcopy(job)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        self.jobs[name] = stored
        self.created.append(name)
        return copy.deepcopy(stored)

    def get_job(self, name: str) -> dict:
        if name not in self.jobs:
            raise NotFoundError(f"get job {name}: 404")
        return copy.deepcopy(self.jobs[name])

    def delete_job(self, name: str, grace_seconds=None) -> None:
        if self.jobs.pop(name, None) is None:
            raise NotFoundError(f"delete job {name}: 404")

    def list_objects(self, kind: str, selector: str) -> tuple[list[dict], str]:
        if kind == "jobs":
            return [copy.deepcopy(j) for j in self.jobs.values()], str(self.rv)
        # no pods unless a test put some: nothing runs in the fake; equality selectors apply
        wanted = dict(term.split("=", 1) for term in selector.split(",") if "=" in term)
        return [copy.deepcopy(p) for p in self.pods.values()
                if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
                ], str(self.rv)

    def pod_log(self, pod: str, container: str, limit_bytes: int) -> str:
        return ""

    def pod_events(self, pod: str) -> list[dict]:
        return []

    def job_events(self, job: str) -> list[dict]:
        self.job_event_reads.append(job)
        return [copy.deepcopy(e) for e in self.events
                if e["involvedObject"].get("kind") == "Job" and e["involvedObject"]["name"] == job]


@dataclass
class FakeReporter:
    statuses: list = field(default_factory=list)
    rejections: list = field(default_factory=list)
    kicks: int = 0

    def status(self, report) -> None:
        self.statuses.append(report)

    def rejected(self, node_id, run_id, error) -> None:
        self.rejections.append((run_id, error))

    def kick(self) -> None:
        self.kicks += 1


class RecordingHandler(logging.Handler):
    """Every log record of the node, formatted, for leak checks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is a bug too
            self.lines.append(f"UNFORMATTABLE {record.msg!r}")


class Harness:
    def __init__(self, root: Path, **config_overrides) -> None:
        self.root = Path(root)
        dbs = []
        for label in DATABASES:
            path = self.root / "data" / f"{label}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("Name,Age\na,1\n")
            dbs.append({"label": label, "uri": str(path), "type": "csv"})
        data = {"node_id": "node-a", "api_key": "node-key-not-for-logs",
                "server_url": "http://127.0.0.1:9", "task_dir": str(self.root / "tasks"),
                "databases": dbs, "images": {"allowed": list(ALLOWED)},
                "job": {"deadline_seconds": 300}, "finishing": {"workers": 0},
                **config_overrides}
        self.config = parse_config(data, {})
        self.cluster = FakeCluster()
        self.reporter = FakeReporter()
        self.ledger = Ledger(self.root / "tasks" / "node-ledger.sqlite")
        self.workspace = Workspace(self.config)
        self.stop = threading.Event()
        self.agent = Agent(self.config, self.cluster, self.ledger, self.workspace, self.reporter,
                           self.stop, proxy=lambda: ProxyAddress("10.96.0.10", 8080, 8080))
        self.log = RecordingHandler()
        logging.getLogger("node").addHandler(self.log)

    def close(self) -> None:
        logging.getLogger("node").removeHandler(self.log)
        self.ledger.close()

    # -- driving the agent as its thread would ------------------------------------------------
    def command(self, raw) -> None:
        self.agent._handle(("command", raw))

    def complete(self, run_id: int, output: str | None = "42") -> None:
        """The run's Job finished successfully (after writing `output`)."""
        name = f"v6-run-{run_id}-node-a"
        job = self.cluster.get_job(name)
        if output is not None:
            out = Path(self.workspace.paths(run_id).output)
            (out / "output").write_text(output)
        job["status"] = {"succeeded": 1, "conditions": [
            {"type": "Complete", "status": "True", "reason": "Completed"}]}
        self.cluster.jobs[name] = job
        # as the watcher delivers it: slimmed (node.objects)
        self.agent._handle(slim_item(("event", "jobs", _event("MODIFIED", job))))

    def results(self) -> dict[int, dict]:
        return {r["run_id"]: r for r in self.ledger.pending_results(limit=1_000_000)}


def _event(etype: str, obj: dict):
    from node.cluster import WatchEvent
    return WatchEvent(etype, copy.deepcopy(obj))
