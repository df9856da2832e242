"""`make demo`: one avg task end to end, on the local cluster, k3d or any kubeconfig."""
from __future__ import annotations

import json
import logging
import secrets
import sys
from pathlib import Path

from localcluster.stack import DEMO_CSV, REPO, NodeSpec, Stack, StackError


def demo_main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m localcluster demo",
                                     description="Run one avg task end to end and print the result.")
    parser.add_argument("--k8s", default="local",
                        help="'local' (the stand-in), 'k3d' (the system deployed there by "
                             "`make demo K8S=k3d`), or a kubeconfig path of a real cluster")
    parser.add_argument("--workdir", default=str(REPO / "run" / "demo"))
    parser.add_argument("--column", default="Age")
    args = parser.parse_args(argv)
    if args.k8s == "k3d":
        from localcluster.k3d import demo_k3d
        return demo_k3d(column=args.column)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = Path(args.workdir)
    if workdir.exists():
        import shutil
        shutil.rmtree(workdir)
    stack = Stack(workdir)
    try:
        print("starting the local cluster, server, proxy and node ...", flush=True)
        databases = [{"label": "default", "uri": str(DEMO_CSV), "type": "csv"}]
        spec = NodeSpec("node-a", "key-node-a-" + secrets.token_hex(8), databases)
        if args.k8s == "local":
            stack.start_cluster()
        else:
            stack.start_cluster(kubeconfig=Path(args.k8s))
        stack.start_server([spec])
        stack.start_proxy()
        stack.start_node("node-a")
        print(f"emitting an avg task over column {args.column!r} of {DEMO_CSV.name} ...",
              flush=True)
        result = stack.emitter("task", "--image", "v6-demo/avg", "--db", "default",
                               "--node", "node-a",
                               "--input", json.dumps({"method": "avg", "column": args.column}),
                               "--wait", "--format", "table")
        sys.stderr.write(result.stderr)
        print(result.stdout, flush=True)
        if result.returncode != 0:
            print(f"the task did not complete; logs are in {workdir / 'logs'}")
            return 1
        return 0
    except StackError as e:
        print(f"demo failed: {e}\nlogs are in {workdir / 'logs'}", file=sys.stderr)
        return 1
    finally:
        stack.close()
