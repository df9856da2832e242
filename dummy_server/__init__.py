"""A small central server in the style of vantage6, for the node's tests and demos.

One process serves Socket.IO (nodes and researchers, CONTRACTS §2) and the HTTP API (§3) on one
port; tasks, runs, status history and results live in SQLite, so state survives a restart.

Run ids. Rich tasks (HTTP ``POST /api/task``) get one run per target node with a globally unique
run id (SQLite autoincrement). A prototype ``command_request`` carries one ``run_id`` for all its
nodes, so the store keys runs by ``(run_id, node_id)`` with an internal primary key; for rich
runs ``run_id`` equals that key. A legacy task takes its run id as task id and refuses an id
already used; it also moves the autoincrement counters past that id, so later rich ids never
collide with it. ``GET /api/run/<id>`` needs ``?node_id=`` only for a legacy run id shared by
several nodes.

Modules: config (settings), tokens (container tokens), store (SQLite), validation (input checks),
service (the rules, no I/O besides the store), sockets and http_api (thin shells), app (wiring);
command_emitter, recipe, emitter_client and emitter_output (the researcher's CLI); testing
(a real server process and a fake node for tests).
"""

__version__ = "0.1.0"
