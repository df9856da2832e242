"""The shim's pure parts: permission reasoning for reachability and the spec the runtime writes."""
from __future__ import annotations

import json
import os
import stat
from types import SimpleNamespace

import pytest

from localcluster.runtime import shim
from localcluster.runtime.base import ContainerSpec, Mount


def _st(mode: int, uid: int = 0, gid: int = 0):
    return SimpleNamespace(st_mode=stat.S_IFDIR | mode, st_uid=uid, st_gid=gid)


@pytest.mark.parametrize("mode,owner,group,uid,gids,ok", [
    (0o700, 0, 0, 1000, {1000}, False),      # /root
    (0o755, 0, 0, 1000, {1000}, True),
    (0o710, 0, 1000, 1000, {1000}, True),    # group may search
    (0o701, 0, 0, 1000, {1000}, True),       # others may search (no read needed)
    (0o070, 1000, 0, 1000, {0}, False),      # the owner class decides for the owner
    (0o000, 5, 5, 0, {0}, True),             # root searches everything
])
def test_can_traverse_follows_the_owner_group_other_classes(mode, owner, group, uid, gids, ok):
    assert shim.can_traverse(_st(mode, owner, group), uid, gids) is ok


def test_blocked_ancestors_names_the_topmost_unsearchable_directory_and_needed_children():
    tree = {"/": _st(0o755), "/root": _st(0o700), "/root/.pyenv": _st(0o755),
            "/work": _st(0o755), "/work/secret": _st(0o700), "/work/secret/repo": _st(0o755)}

    def fake_stat(path):
        return tree[path]
    blocked = shim.blocked_ancestors(
        ["/root/.pyenv/versions/3.11", "/root/.other", "/work/secret/repo", "/work/open"],
        1000, {1000}, stat_fn=fake_stat)
    assert blocked == {"/root": {".pyenv", ".other"}, "/work/secret": {"repo"}}


def test_nothing_is_blocked_for_root():
    assert shim.blocked_ancestors(["/root/x"], 0, {0},
                                  stat_fn=lambda p: _st(0o700)) == {}


def test_default_root_capabilities_are_known_capability_names():
    assert set(shim.DEFAULT_ROOT_CAPS) <= set(shim.CAP_NUMBERS)
    assert "SYS_ADMIN" not in shim.DEFAULT_ROOT_CAPS and "NET_ADMIN" not in shim.DEFAULT_ROOT_CAPS


@pytest.mark.skipif(os.geteuid() != 0, reason="the runtime writes namespace specs only as root")
def test_runtime_writes_the_shim_spec_it_documents(tmp_path):
    import asyncio

    from localcluster.runtime.process import ProcessRuntime

    async def go():
        rt = ProcessRuntime(tmp_path)
        spec = ContainerSpec(id="abc", argv=["/bin/true"], env={"A": "1"},
                             log_path=tmp_path / "log", cwd="/", uid=7, gid=8, groups=[9],
                             mounts=[Mount(str(tmp_path), "/app/x", True)], root_readonly=True)
        c = await rt.start(spec)
        written = json.loads((tmp_path / "containers" / "abc" / "spec.json").read_text())
        mode = (tmp_path / "containers" / "abc" / "spec.json").stat().st_mode & 0o777
        status = await rt.wait(c)
        return written, mode, status
    written, mode, status = asyncio.run(go())
    assert status.exit_code == 0
    assert mode == 0o600  # the env may hold secrets
    assert written["argv"] == ["/bin/true"] and written["env"] == {"A": "1"}
    assert written["mounts"] == [{"source": str(tmp_path), "target": "/app/x", "readonly": True}]
    assert (written["uid"], written["gid"], written["groups"]) == (7, 8, [9])
    assert written["root_readonly"] is True and written["namespace"] is True
    assert written["no_new_privs"] is True
