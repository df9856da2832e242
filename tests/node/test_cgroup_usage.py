"""The pod's CPU time and peak memory (node/cgroup_usage.py), read from fake cgroup trees under
tmp_path: cgroup v2 (cgroupfs and systemd drivers), cgroup v1, and the ways it is unavailable.

read_usage must never raise: every bad input goes through `usage()`, which fails the test with
the exception should read_usage raise one."""
from __future__ import annotations

from pathlib import Path

import pytest

from node.cgroup_usage import parse_proc_cgroup, pod_dir, read_usage

UID = "8f14e45f-ceea-467f-a9f4-1d5c2e7b9a10"
UID_SYSTEMD = UID.replace("-", "_")
CID = "3b9f1c0e5a7d4e2f8c6b0a1d9e8f7c6b5a4d3e2f1c0b9a8d7e6f5c4b3a2d1e0f"

CGROUPFS = f"kubepods/burstable/pod{UID}"
SYSTEMD = ("kubepods.slice/kubepods-burstable.slice/"
           f"kubepods-burstable-pod{UID_SYSTEMD}.slice")
SYSTEMD_CONTAINER = f"cri-containerd-{CID}.scope"


def usage(root: Path, proc: Path) -> dict:
    try:
        result = read_usage(root, proc)
    except Exception as e:  # the contract: never raises
        pytest.fail(f"read_usage raised {type(e).__name__}: {e}")
    assert isinstance(result, dict) and isinstance(result.get("available"), bool)
    return result


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "sys-fs-cgroup"
    path.mkdir()
    return path


@pytest.fixture
def proc(tmp_path) -> Path:
    return tmp_path / "proc-self-cgroup"


def cpu_stat(usage_usec: int) -> str:
    return (f"usage_usec {usage_usec}\nuser_usec {usage_usec * 4 // 5}\n"
            f"system_usec {usage_usec // 5}\nnr_periods 0\nnr_throttled 0\n")


def v2_pod(root: Path, pod: str, usage_usec: int, peak: int | None) -> Path:
    d = root / pod
    write(d / "cpu.stat", cpu_stat(usage_usec))
    if peak is not None:
        write(d / "memory.peak", f"{peak}\n")
    return d


# --- parse_proc_cgroup -----------------------------------------------------------------------

def test_parse_proc_cgroup_v2_unified_line():
    assert parse_proc_cgroup([f"0::/{CGROUPFS}/{CID}"]) == {"": f"/{CGROUPFS}/{CID}"}


def test_parse_proc_cgroup_v1_lines_split_co_mounted_controllers():
    lines = [f"12:memory:/kubepods/pod{UID}/{CID}",
             f"4:cpu,cpuacct:/kubepods/pod{UID}/{CID}",
             "1:name=systemd:/kubepods/besteffort",
             "0::/"]
    assert parse_proc_cgroup(lines) == {
        "memory": f"/kubepods/pod{UID}/{CID}",
        "cpu": f"/kubepods/pod{UID}/{CID}",
        "cpuacct": f"/kubepods/pod{UID}/{CID}",
        "systemd": "/kubepods/besteffort",
        "": "/",
    }


def test_parse_proc_cgroup_skips_malformed_lines_and_keeps_colons_in_paths():
    lines = ["", "garbage", "1:only-two", "  0::/a:b/c  "]
    assert parse_proc_cgroup(lines) == {"": "/a:b/c"}


# --- pod_dir ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path, expected", [
    (f"/{CGROUPFS}/{CID}", CGROUPFS),
    (f"/{CGROUPFS}", CGROUPFS),
    (f"/kubepods/pod{UID}/{CID}", f"kubepods/pod{UID}"),                 # guaranteed QoS
    (f"/{SYSTEMD}/{SYSTEMD_CONTAINER}", SYSTEMD),
    (f"/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/{SYSTEMD_CONTAINER}",
     f"kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice"),
    (f"//{CGROUPFS}//{CID}/", CGROUPFS),
])
def test_pod_dir_finds_the_pod_directory(path, expected):
    assert pod_dir(path) == expected


@pytest.mark.parametrize("path", [
    "", "/", "/kubepods/burstable", f"/{CID}",
    "/user.slice/user-1000.slice/session-1.scope",
    "/kubepods/burstable/podnot-a-uid/x",
    f"/kubepods/burstable/pod{UID[:-1]}/x",          # one hex digit short
    f"/kubepods/burstable/pod{UID.upper()}/x",
])
def test_pod_dir_none_without_a_pod_directory(path):
    assert pod_dir(path) is None


# --- cgroup v2 -------------------------------------------------------------------------------

def test_v2_cgroupfs_driver_reads_the_pods_cgroup(root, proc):
    usage_usec, peak = 2_500_000, 734_003_200
    v2_pod(root, CGROUPFS, usage_usec, peak)
    # the sidecar's own container cgroup: must not be what is reported
    v2_pod(root, f"{CGROUPFS}/{CID}", 1_000, 4096)
    write(proc, f"0::/{CGROUPFS}/{CID}\n")
    assert usage(root, proc) == {"available": True, "scope": "pod",
                                 "cpu_seconds": usage_usec / 1_000_000,
                                 "memory_peak_bytes": peak}


def test_v2_systemd_driver_reads_the_pods_slice(root, proc):
    usage_usec, peak = 7_250_000, 1_048_576
    v2_pod(root, SYSTEMD, usage_usec, peak)
    write(proc, f"0::/{SYSTEMD}/{SYSTEMD_CONTAINER}\n")
    result = usage(root, proc)
    assert result == {"available": True, "scope": "pod", "cpu_seconds": usage_usec / 1_000_000,
                      "memory_peak_bytes": peak}


def test_v2_cpu_seconds_are_rounded_to_milliseconds(root, proc):
    usage_usec = 1_234_567
    v2_pod(root, CGROUPFS, usage_usec, None)
    write(proc, f"0::/{CGROUPFS}/{CID}\n")
    assert usage(root, proc)["cpu_seconds"] == round(usage_usec / 1_000_000, 3)


def test_v2_without_memory_peak_still_reports_cpu(root, proc):
    usage_usec = 2_500_000
    v2_pod(root, CGROUPFS, usage_usec, None)
    write(proc, f"0::/{CGROUPFS}/{CID}\n")
    result = usage(root, proc)
    assert result["available"] is True
    assert result["cpu_seconds"] == usage_usec / 1_000_000
    assert result["memory_peak_bytes"] is None


@pytest.mark.parametrize("peak_text", ["", "max\n", "-1\n", "12 34\n"])
def test_v2_unreadable_memory_peak_is_unknown_not_fatal(root, proc, peak_text):
    usage_usec = 3_000_000
    d = v2_pod(root, CGROUPFS, usage_usec, None)
    write(d / "memory.peak", peak_text)
    write(proc, f"0::/{CGROUPFS}/{CID}\n")
    result = usage(root, proc)
    assert result["available"] is True
    assert result["cpu_seconds"] == usage_usec / 1_000_000
    assert result["memory_peak_bytes"] is None


def test_v2_private_cgroup_namespace_is_unavailable(root, proc):
    v2_pod(root, "", 2_500_000, 100)         # the namespace root holds the sidecar's own figures
    write(proc, "0::/\n")
    result = usage(root, proc)
    assert result["available"] is False
    assert "cgroup namespace" in result["reason"]
    assert "cpu_seconds" not in result


def test_not_in_a_pod_is_unavailable(root, proc):
    write(proc, "0::/user.slice/user-1000.slice/session-1.scope\n")
    result = usage(root, proc)
    assert result["available"] is False
    assert result["reason"]


def test_v2_pod_dir_named_but_not_mounted_is_unavailable(root, proc):
    write(proc, f"0::/{CGROUPFS}/{CID}\n")
    result = usage(root, proc)
    assert result["available"] is False
    assert "not visible" in result["reason"]
    assert CGROUPFS in result["reason"]


@pytest.mark.parametrize("content", [
    "this is not a cpu.stat file\n",
    "usage_usec lots\nuser_usec 1\n",
    "usage_usec\n",
    "user_usec 100\nsystem_usec 100\n",
    "",
])
def test_v2_garbage_cpu_stat_is_unavailable(root, proc, content):
    write(root / CGROUPFS / "cpu.stat", content)
    write(root / CGROUPFS / "memory.peak", "4096\n")
    write(proc, f"0::/{CGROUPFS}/{CID}\n")
    result = usage(root, proc)
    assert result["available"] is False
    assert "cpu.stat" in result["reason"]


def test_v2_missing_cpu_stat_is_unavailable(root, proc):
    (root / CGROUPFS).mkdir(parents=True)
    write(proc, f"0::/{CGROUPFS}/{CID}\n")
    result = usage(root, proc)
    assert result["available"] is False
    assert "cpu.stat" in result["reason"]


# read_usage never raises: not even for bytes that are not text, or a digit int() refuses ("²")
@pytest.mark.parametrize("where, content", [
    ("cpu.stat", b"usage_usec \xff\xfe\n"),
    ("memory.peak", b"\xff\xfe\n"),
    ("proc", b"0::/\xff\n"),
    ("cpu.stat", "usage_usec \u00b2\n".encode()),
])
def test_v2_undecodable_or_odd_digit_files_do_not_raise(root, proc, where, content):
    d = v2_pod(root, CGROUPFS, 2_500_000, None)
    write(proc, f"0::/{CGROUPFS}/{CID}\n")
    write(proc if where == "proc" else d / where, content)
    result = usage(root, proc)
    if where == "memory.peak":
        assert result["available"] is True and result["memory_peak_bytes"] is None
    else:
        assert result["available"] is False


# --- /proc/self/cgroup ----------------------------------------------------------------------

def test_missing_proc_cgroup_is_unavailable(root, proc):
    v2_pod(root, CGROUPFS, 2_500_000, 100)
    result = usage(root, proc)                  # proc was never written
    assert result["available"] is False
    assert str(proc) in result["reason"]


def test_proc_cgroup_that_is_a_directory_is_unavailable(root, proc):
    proc.mkdir()
    assert usage(root, proc)["available"] is False


def test_empty_proc_cgroup_is_unavailable(root, proc):
    write(proc, "")
    assert usage(root, proc)["available"] is False


def test_reason_is_bounded(tmp_path, root):
    proc = tmp_path / ("d" * 250) / "cgroup"
    result = usage(root, proc)
    assert result["available"] is False
    assert len(result["reason"]) <= 200


# --- cgroup v1 -------------------------------------------------------------------------------

V1_POD = f"kubepods/pod{UID}"


def v1_proc(proc: Path) -> None:
    write(proc, f"12:memory:/{V1_POD}/{CID}\n"
                f"4:cpu,cpuacct:/{V1_POD}/{CID}\n"
                f"1:name=systemd:/{V1_POD}/{CID}\n")


@pytest.mark.parametrize("cpu_mount", ["cpu,cpuacct", "cpuacct", "cpuacct,cpu"])
def test_v1_reads_cpuacct_and_memory_max_usage(root, proc, cpu_mount):
    nanos, peak = 3_250_000_000, 268_435_456
    write(root / cpu_mount / V1_POD / "cpuacct.usage", f"{nanos}\n")
    write(root / cpu_mount / V1_POD / CID / "cpuacct.usage", "5\n")        # the container's own
    write(root / "memory" / V1_POD / "memory.max_usage_in_bytes", f"{peak}\n")
    v1_proc(proc)
    assert usage(root, proc) == {"available": True, "scope": "pod",
                                 "cpu_seconds": nanos / 1_000_000_000,
                                 "memory_peak_bytes": peak}


def test_v1_without_a_memory_cgroup_still_reports_cpu(root, proc):
    nanos = 1_500_000_000
    write(root / "cpu,cpuacct" / V1_POD / "cpuacct.usage", f"{nanos}\n")
    v1_proc(proc)
    result = usage(root, proc)
    assert result["available"] is True
    assert result["cpu_seconds"] == nanos / 1_000_000_000
    assert result["memory_peak_bytes"] is None


def test_v1_without_a_memory_line_still_reports_cpu(root, proc):
    nanos = 1_500_000_000
    write(root / "cpu,cpuacct" / V1_POD / "cpuacct.usage", f"{nanos}\n")
    write(proc, f"4:cpu,cpuacct:/{V1_POD}/{CID}\n")
    result = usage(root, proc)
    assert result["available"] is True and result["memory_peak_bytes"] is None


def test_v1_cpuacct_not_mounted_is_unavailable(root, proc):
    write(root / "memory" / V1_POD / "memory.max_usage_in_bytes", "4096\n")
    v1_proc(proc)
    result = usage(root, proc)
    assert result["available"] is False
    assert "not visible" in result["reason"]


@pytest.mark.parametrize("content", ["", "many\n", "-5\n", "1.5\n"])
def test_v1_garbage_cpuacct_usage_is_unavailable(root, proc, content):
    write(root / "cpu,cpuacct" / V1_POD / "cpuacct.usage", content)
    v1_proc(proc)
    result = usage(root, proc)
    assert result["available"] is False
    assert "cpuacct.usage" in result["reason"]


def test_hybrid_with_an_empty_unified_path_reads_v1(root, proc):
    nanos = 2_000_000_000
    write(root / "cpu,cpuacct" / V1_POD / "cpuacct.usage", f"{nanos}\n")
    write(proc, f"4:cpu,cpuacct:/{V1_POD}/{CID}\n0::/\n")
    result = usage(root, proc)
    assert result["available"] is True
    assert result["cpu_seconds"] == nanos / 1_000_000_000


def test_hybrid_unified_pod_not_visible_falls_back_to_v1(root, proc):
    nanos = 2_000_000_000
    write(root / "cpu,cpuacct" / V1_POD / "cpuacct.usage", f"{nanos}\n")
    write(proc, f"4:cpu,cpuacct:/{V1_POD}/{CID}\n0::/{V1_POD}/{CID}\n")
    result = usage(root, proc)
    assert result["available"] is True
    assert result["cpu_seconds"] == nanos / 1_000_000_000
