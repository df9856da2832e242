"""`python -m algorithms.avg_service`: the mean of a column from the companion query service.

Input (INPUT_FILE): ``{"column": "Age"}``. Output (OUTPUT_FILE): ``{"mean": m, "count": n}``,
as ``algorithms.avg``'s ``avg`` method. Needs SERVICE_URL (a task ``service``, CONTRACTS §10);
without it it fails at once with exit code 2. Service errors exit with 4.
"""
from __future__ import annotations

import logging
import os
import sys

from algorithms.common.env import load_env
from algorithms.common.errors import AlgorithmError, InputError
from algorithms.common.io import read_input, write_json_output

from .client import ServiceClient, service_url

log = logging.getLogger("algorithms.avg_service")


def column_of(raw: object) -> str:
    if not isinstance(raw, dict) or not isinstance(raw.get("column"), str) or not raw["column"]:
        raise InputError('the task input must be a JSON object like {"column": "Age"}')
    return raw["column"]


def run() -> None:
    client = ServiceClient(service_url(os.environ))
    env = load_env()
    column = column_of(read_input(env.require_path("input_file")))
    answer = client.get("/mean", column=column)
    print(f"first request to the service at monotonic {client.first_request_at:.6f}", flush=True)
    mean, count = answer.get("mean"), answer.get("count")
    if not isinstance(mean, (int, float)) or not isinstance(count, int):
        raise AlgorithmError(f"the service answered without a mean and count: {answer!r:.200}")
    write_json_output(env.require_path("output_file"), {"mean": mean, "count": count})
    print(f"mean of {column!r}: {mean} over {count} rows", flush=True)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        run()
    except AlgorithmError as e:
        print(f"avg_service: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
