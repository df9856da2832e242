"""`python -m node --config FILE`: run the node until SIGTERM or SIGINT.

`python -m node monitor ...` shows the node's runs live; `python -m node explain ...` shows what
the node would do with a task (verdict, manifests, server dry run); `python -m node pins` lists or
drops image pins (images.digest: pin); `python -m node sidecar` is the
live-channel sidecar of an algorithm pod (the same as `python -m node.sidecar`).
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from node.errors import NodeError


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                 "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class Redact(logging.Filter):
    """Last line of defence: no secret known to the node reaches a log line."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(s in message for s in self.secrets):
            for s in self.secrets:
                message = message.replace(s, "[redacted]")
            record.msg, record.args = message, None
        return True


def setup_logging(level: str, fmt: str, secrets: list[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redact(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # the client libraries are chatty at INFO and may print URLs with query strings
    for noisy in ("urllib3", "socketio", "engineio", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["monitor"]:
        from node.monitor import main as monitor_main
        return monitor_main(argv[1:])
    if argv[:1] == ["explain"]:
        from node.explain import main as explain_main
        return explain_main(argv[1:])
    if argv[:1] == ["pins"]:
        from node.pins import main as pins_main
        return pins_main(argv[1:])
    if argv[:1] == ["sidecar"]:
        from node.sidecar import main as sidecar_main
        return sidecar_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m node", description=__doc__)
    parser.add_argument("--config", required=True, help="node configuration (YAML)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)

    from node.config import load_config
    try:
        config = load_config(args.config)
    except NodeError as e:
        print(f"invalid node configuration {args.config}:\n{e}", file=sys.stderr)
        return 2
    setup_logging(args.log_level.upper(), args.log_format, [config.api_key])
    # before any socket or connection is made; each followed run costs open files (§9)
    from node.limits import raise_open_files_limit
    raise_open_files_limit()

    from node.app import NodeApp
    from node.stopsignal import StopSignal
    done = StopSignal().install(signal.SIGTERM, signal.SIGINT)  # a handler that takes no lock
    try:
        app = NodeApp(config)
        app.start()
    except NodeError as e:
        logging.getLogger("node").error("cannot start: %s", e)
        return 1
    try:
        while not done.wait(1.0):
            if not app.agent.is_alive():
                logging.getLogger("node").error("agent thread ended; stopping")
                break
    finally:
        app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
