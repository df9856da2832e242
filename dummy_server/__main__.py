"""``python -m dummy_server --config server_config.yaml [--port N] [--port-file FILE]``."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from pathlib import Path

from .app import serve
from .config import load_config
from .errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dummy_server", description=__doc__)
    parser.add_argument("--config", type=Path, help="server_config.yaml")
    parser.add_argument("--host", help="bind address (overrides the config)")
    parser.add_argument("--port", type=int, help="port, 0 = any free port (overrides the config)")
    parser.add_argument("--database", type=Path, help="SQLite file (overrides the config)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                   ("database", args.database)) if v is not None}
    config = dataclasses.replace(config, **overrides)
    asyncio.run(serve(config, args.port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
