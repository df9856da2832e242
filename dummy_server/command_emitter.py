"""Send tasks to the dummy server and follow them: ``python -m dummy_server.command_emitter``.

  ... task --image IMG [--arg X ...] [--input JSON] [--db LABEL ...] [--node ID ...] [--wait]
  ... recipe FILE [--wait]
  ... status TASK_ID
  ... kill TASK_ID
  ... explain --image IMG [--arg X ...] [--input JSON] [--db LABEL ...] [--node ID ...]
  ... legacy --run-id N --image IMG [--task-info k=v ...] [--db LABEL ...] [--wait]

Server URL and researcher key from --server/--key or env V6_SERVER_URL/V6_RESEARCHER_KEY.
With --wait, live status lines go to stderr and the final results to stdout (JSON or table).
The server's warnings (e.g. a target node is offline: its runs wait for it) go to stderr, and
with --wait so do state changes of the target nodes (alive / suspected / offline).
`explain` is a dry run: each target node answers what it would do with the task (verdict with
every reason, the Job and NetworkPolicy it would create, the cluster's dry-run answer); nothing is
created. Exit codes: 0 every run completed (explain: every node allows it) (or, without --wait, the request was accepted), 1 a run failed,
did not finish in time, or the server could not be reached, 2 bad usage, recipe or request.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .emitter_client import EmitterError, ServerClient, Waiter
from .emitter_output import exit_code, render, render_explanations
from .recipe import RecipeError, parse_recipe


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dummy_server.command_emitter",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=os.environ.get("V6_SERVER_URL", "http://127.0.0.1:5000"))
    p.add_argument("--key", default=os.environ.get("V6_RESEARCHER_KEY"),
                   help="researcher api key (default: env V6_RESEARCHER_KEY)")
    sub = p.add_subparsers(dest="command", required=True)

    def waiting(sp):
        sp.add_argument("--wait", action="store_true", help="follow the runs until all report")
        sp.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (--wait)")
        sp.add_argument("--format", choices=("json", "table"), default="json")

    t = sub.add_parser("task", help="send one task")
    t.add_argument("--image", required=True)
    t.add_argument("--arg", action="append", dest="arguments", help="container argument (repeat)")
    t.add_argument("--input", help="task input as JSON")
    t.add_argument("--db", action="append", dest="databases", help="database label (repeat)")
    t.add_argument("--node", action="append", dest="nodes", help="target node id (repeat)")
    t.add_argument("--name")
    waiting(t)

    e = sub.add_parser("explain", help="a dry run: what each node would do with a task")
    e.add_argument("--image", required=True)
    e.add_argument("--arg", action="append", dest="arguments", help="container argument (repeat)")
    e.add_argument("--input", help="task input as JSON")
    e.add_argument("--db", action="append", dest="databases", help="database label (repeat)")
    e.add_argument("--node", action="append", dest="nodes", help="target node id (repeat)")
    e.add_argument("--name")
    e.add_argument("--format", choices=("json", "text"), default="text")

    r = sub.add_parser("recipe", help="send the tasks of a YAML recipe")
    r.add_argument("file", type=Path)
    waiting(r)

    s = sub.add_parser("status", help="show a task's state and results")
    s.add_argument("task_id", type=int)
    s.add_argument("--format", choices=("json", "table"), default="json")

    k = sub.add_parser("kill", help="ask the nodes to stop a task's unfinished runs")
    k.add_argument("task_id", type=int)

    lg = sub.add_parser("legacy", help="emit the prototype's command_request payload")
    lg.add_argument("--run-id", type=int, required=True)
    lg.add_argument("--image", required=True)
    lg.add_argument("--task-info", action="append", default=[], metavar="KEY=VALUE",
                    help="becomes a container argument, in order (repeat)")
    lg.add_argument("--docker-input", default="input1")
    lg.add_argument("--tmp-vol-name", default="example-tmp-vol")
    lg.add_argument("--token", default="example_token")
    lg.add_argument("--db", action="append", dest="databases", default=None)
    lg.add_argument("--node", action="append", dest="nodes", help="target node id (repeat)")
    waiting(lg)
    return p


def _task_body(args) -> dict:
    body: dict = {"image": args.image, "databases": args.databases or []}
    if args.input is not None:
        try:
            body["input"] = json.loads(args.input)
        except ValueError as e:
            raise EmitterError(f"--input is not valid JSON: {e}", 2) from e
    for key in ("arguments", "nodes", "name"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    return body


def _legacy_payload(args) -> dict:
    task_info = {}
    for item in args.task_info:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EmitterError(f"--task-info {item!r}: expected KEY=VALUE", 2)
        task_info[key] = value
    payload = {"run_id": args.run_id, "task_info": task_info, "image": args.image,
               "docker_input": args.docker_input, "tmp_vol_name": args.tmp_vol_name,
               "token": args.token, "databases_to_use": args.databases or ["default"]}
    if args.nodes:
        payload["target_nodes"] = args.nodes
    return payload


def _bodies(args) -> list[dict]:
    """The task bodies to send (checked before anything goes to the server)."""
    if args.command == "task":
        return [_task_body(args)]
    try:
        recipe = parse_recipe(args.file.read_text(), str(args.file))
    except OSError as e:
        raise EmitterError(f"cannot read recipe: {e}", 2) from e
    return [t.body for t in recipe for _ in range(t.repeat)]


def _submit(client: ServerClient, args, waiter: Waiter, sio, prepared) -> list[dict]:
    """Send what the subcommand asks for; returns the server's answers."""
    if args.command == "legacy":
        ack = sio.call("command_request", prepared, timeout=30)
        if not isinstance(ack, dict) or not ack.get("ok"):
            raise EmitterError(f"server refused the command: {(ack or {}).get('error')}", 2)
        waiter.follow(ack)
        return [ack]
    created = []
    for body in prepared:
        answer = client.create_task(body)
        waiter.follow(answer)
        created.append(answer)
    return created


def run(args) -> int:
    if not args.key:
        raise EmitterError("no researcher key: pass --key or set V6_RESEARCHER_KEY", 2)
    client = ServerClient(args.server, args.key)
    try:
        if args.command == "status":
            task = client.get_task(args.task_id)
            print(render([task], args.format))
            return 0
        if args.command == "kill":
            print(json.dumps(client.kill_task(args.task_id), indent=2))
            return 0
        if args.command == "explain":
            answers = client.explain_task(_task_body(args))["nodes"]
            print(json.dumps(answers, indent=2) if args.format == "json"
                  else render_explanations(answers))
            return 0 if all(a.get("verdict") == "allowed" for a in answers.values()) else 1
        prepared = _legacy_payload(args) if args.command == "legacy" else _bodies(args)
        waiter = Waiter(client)
        # Subscribe before submitting so no event is missed (legacy tasks need the socket anyway).
        sio = client.socket(waiter.on_event) if args.wait or args.command == "legacy" else None
        try:
            created = _submit(client, args, waiter, sio, prepared)
            if not args.wait:
                print(json.dumps(created if len(created) > 1 else created[0], indent=2))
                return 0
            tasks, finished = waiter.wait(args.timeout)
        finally:
            if sio is not None:
                sio.disconnect()
        print(render(tasks, args.format))
        if not finished:
            print(f"timed out after {args.timeout:g}s waiting for results", file=sys.stderr)
            return 1
        return exit_code(tasks)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except (EmitterError, RecipeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())
