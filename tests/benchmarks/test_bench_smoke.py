"""The benchmark code end to end in a tiny mode: it runs and its results are well formed.
No timing is asserted (speed is what the benchmark reports, not what a test checks)."""
from __future__ import annotations

import json
import math
import os

import pytest

from benchmarks import report
from benchmarks.__main__ import settings_from, run, write

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="pods with volumes run in private mount namespaces, which need root"),
]


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_tiny_benchmark_writes_well_formed_results(tmp_path):
    s = settings_from(["--quick", "--repeats", "1", "--tasks", "2", "--scale", "2",
                       "--idle-seconds", "1", "--proxy-requests", "10", "--stream-mb", "2",
                       "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "work"),
                       "--no-plot"])
    results = run(s)
    paths = write(results, s)

    assert {p.name for p in paths} == {"results.json", "results.md"}
    loaded = json.loads((tmp_path / "out" / "results.json").read_text())
    assert all(math.isfinite(x) for x in _numbers(loaded))
    for mode in ("watch", "watch-nolive", "poll"):
        lat = loaded["latency"][mode]
        assert lat["tasks_per_repeat"] == 2
        assert lat["statuses"] == [{"completed": 2}]
        for fig in ("dispatch_ms", "completion_ms", "api_requests_per_task"):
            assert lat[fig]["p50"]["median"] is not None, (mode, fig)
            assert lat[fig]["p50"]["min"] <= lat[fig]["p50"]["median"] <= lat[fig]["p50"]["max"]
        assert lat["api_requests_by_verb_per_task"].get("create jobs", 0) >= 1
        assert loaded["idle"][mode]["requests_per_minute"]["median"] >= 0
    for config in ("watch", "watch-nolive", "poll"):
        level = loaded["scale"]["levels"][config]["2"]
        assert level["statuses"] == [{"completed": 2}], config
        assert level["node_peak_rss_mb"]["median"] > 0
        assert level["completion_ms"]["p99"]["median"] is not None
        assert level["node_fds_peak"]["median"] > 0
    # live on: every in-flight run's sidecar is followed by one SUB socket (a REQ only while a
    # ping is out)
    on = loaded["scale"]["levels"]["watch"]["2"]["node_sockets_in_flight"]["median"]
    off = loaded["scale"]["levels"]["watch-nolive"]["2"]["node_sockets_in_flight"]["median"]
    assert on >= off + 2
    progress = loaded["progress"]
    assert progress["lines_received"] == progress["lines_written"] > 0
    assert progress["latency_ms"]["p50"]["median"] > 0
    assert loaded["proxy"]["stream"]["proxy_peak_rss_mb"]["median"] > 0
    assert loaded["proxy"]["latency"]["proxy_ms"]["p50"]["median"] > 0
    names = [t["name"] for t in loaded["targets"]]
    assert len(names) == 12
    # "flat" compares two levels; with one level it cannot be judged
    assert all(t["met"] in (True, False) for t in loaded["targets"] if "CPU per run" not in t["name"])
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| target |" in md and "## Proxy" in md and "## Scale" in md


def _level_fig(cpu, rss, p99, release):
    return {"node_cpu_ms_per_task": {"median": cpu}, "node_peak_rss_mb": {"median": rss},
            "completion_ms": {"p99": {"median": p99}},
            "seconds_release_to_all_results": {"median": release}}


def test_targets_are_judged_from_the_medians():
    results = {
        "latency": {"watch": {"dispatch_ms": {"p99": {"median": 60.0}},
                              "completion_ms": {"p99": {"median": 100.0}},
                              "api_requests_per_task": {"mean": {"median": 5.0}}},
                    "completion_ratio_poll_over_watch": {"p99": {"median": 9.0}}},
        "idle": {"watch": {"requests_per_30s": {"median": 0.0}}},
        "scale": {"levels": {
            "watch": {"10": _level_fig(10.0, 80.0, 50.0, 0.3),
                      "1000": _level_fig(20.0, 120.0, 1500.0, 6.0)},
            "poll": {"10": _level_fig(10.0, 80.0, 900.0, 1.0),
                     "1000": _level_fig(20.0, 120.0, 16000.0, 9.0)}}},
        "proxy": {"latency": {"overhead_ms": {"p50": {"median": 0.5}}},
                  "stream": {"proxy_peak_rss_mb": {"median": 70.0}}},
    }
    got = report.targets(results)
    met = {t["name"]: t["met"] for t in got}
    measured = {t["name"]: t["measured"] for t in got}
    assert met["dispatch overhead p99"] is False
    assert met["completion p99, one task at a time"] is True
    assert met["completion p99 one at a time: poll 1 s / watch"] is True
    assert met["1000 runs released at once → all results"] is False  # 6 s
    assert met["completion p99, 1000 in flight"] is True
    assert met["node CPU per run, 1000 vs 10 in flight"] is False  # 2× is not flat
    assert measured["node CPU per run, 1000 vs 10 in flight"] == 2.0
    assert met["node peak RSS, 1000 in flight, live on"] is True
    # the lowest ratio decides: 900/50 = 18× at 10, 16000/1500 ≈ 10.7× at 1000
    ratio = "completion p99 at every scale: poll 1 s / watch (the lowest)"
    assert met[ratio] is True and abs(measured[ratio] - 16000 / 1500) < 1e-9
    assert met["proxy overhead p50"] is True
    assert met["proxy peak RSS while streaming"] is False
    assert met["idle node API requests per 30 s"] is True


def test_a_target_not_measured_is_neither_met_nor_missed():
    got = {t["name"]: t["met"] for t in report.targets({})}
    assert len(got) == 12 and set(got.values()) == {None}
