"""`python -m algorithms.query_service`: serve one node database over HTTP until SIGTERM.

Env: ``SERVICE_PORT`` (set by the node), the database variables of CONTRACTS §5 for the
service's ``databases``, optional ``QUERY_DATABASE`` (a label; default: the first one) and
``SERVICE_BIND`` (default ``0.0.0.0``: the kubelet probes the pod IP; the pod's NetworkPolicy
lets nothing else in). Exit codes as the other algorithms: 2 bad env, 3 unusable database.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from algorithms.common.env import load_env
from algorithms.common.errors import AlgorithmError, EnvError

from .server import QueryServer, log_line
from .table import load_table


def port_from_env() -> int:
    raw = os.environ.get("SERVICE_PORT", "")
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise EnvError(f"SERVICE_PORT must be a TCP port number, got {raw!r}")
    return int(raw)


def main() -> int:
    try:
        port = port_from_env()
        env = load_env()
        db = env.database(os.environ.get("QUERY_DATABASE") or None)
        if db.uri is None:
            raise EnvError(f"database {db.label!r} has no DATABASE_URI_* variable")
        table = load_table(Path(db.uri))
        server = QueryServer((os.environ.get("SERVICE_BIND") or "0.0.0.0", port), table)
    except AlgorithmError as e:
        print(f"query-service: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"query-service: error: cannot listen on port {port}: {e}", file=sys.stderr)
        return 2
    # SIGTERM (the kubelet stopping the sidecar): finish the request in hand, then exit 0
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    log_line(f"serving database {db.label!r} ({table.count} rows, columns "
             f"{', '.join(table.columns)}) on port {port}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    log_line("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
