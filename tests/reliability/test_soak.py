"""A soak: many tasks across two nodes with API faults and cut watches on, a server restart and
a node kill along the way. Counts of submitted, completed, failed and lost runs (lost must be 0)
go to soak-results.json in the long mode (`make soak`: 500 tasks); `make test` runs 16."""
from __future__ import annotations

import signal
import time

from tests.integration.support import make_stack, node_spec, pytestmark  # noqa: F401
from tests.reliability.checks import Ledger, check, wait_results
from tests.reliability.settings import examples, record

FAULTS = {"error_rate": {"*": 0.05}, "error_codes": [500, 503, 429, 409], "watch_cut_after": 5,
          "watch_cut_mode": "reset", "seed": 500}
WINDOW = 12  # runs in flight at once: enough to overlap, few enough for two cores


def test_soak_two_nodes_with_faults(tmp_path):
    total = examples(16, 500)
    stack = make_stack(tmp_path, [node_spec("node-a"), node_spec("node-b")])
    started = time.monotonic()
    ledger = Ledger()
    figures = {"tasks_submitted": 0}
    try:
        stack.cluster.set_faults(FAULTS)
        in_flight: list[tuple[str, int]] = []
        for i in range(total):
            node = ("node-a", "node-b")[i % 2]
            task = stack.create_task(image="test/sleeper", input={"seconds": 0.1}, databases=[],
                                     nodes=[node])
            ledger.add_task(task, {"completed"})
            figures["tasks_submitted"] += 1
            in_flight.append((node, task["runs"][0]["id"]))
            if len(in_flight) >= WINDOW:
                window = Ledger({k: ledger.expected[k] for k in in_flight})
                wait_results(stack, window, timeout=300)
                in_flight.clear()
            if i == total // 3:
                stack.restart_server()
            if i == 2 * total // 3:
                stack.stop_node("node-b", sig=signal.SIGKILL)
                stack.start_node("node-b")
        results = wait_results(stack, ledger, timeout=300)
        by_status: dict[str, int] = {}
        for run in results.values():
            status = run["result"]["status"]
            by_status[status] = by_status.get(status, 0) + 1
        faults_served = stack.cluster.faults()
        figures.update({
            "runs_submitted": len(ledger.expected),
            "completed": by_status.get("completed", 0),
            "failed": sum(v for k, v in by_status.items() if k != "completed"),
            "lost": len(ledger.expected) - len(results),
            "by_status": by_status,
            "faults": {k: faults_served[k] for k in ("error_rate", "error_codes",
                                                     "watch_cut_after")},
            "api_requests": stack.cluster.metrics().get("total", 0),
            # each injected error the nodes met is logged once (retried or resumed)
            "injected_errors_met_by_nodes": sum(
                p.read_text(errors="replace").count("injected fault")
                for p in (stack.workdir / "logs").glob("node-*.log")),
            "server_restarts": 1, "node_kills": 1,
            "seconds": round(time.monotonic() - started, 1),
        })
        record("soak", figures)  # before the checks: a failing soak's figures matter most
        check(stack, ledger, timeout=60)
    finally:
        stack.close()
    assert figures["lost"] == 0 and figures["completed"] == len(ledger.expected), figures
