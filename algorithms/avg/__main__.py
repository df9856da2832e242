"""`python -m algorithms.avg [<csv path> <column> <output path>]`.

With three arguments (the prototype's task_info) the mean is written as text to the output path.
Without arguments the task input (INPUT_FILE) chooses the method; see algorithms/avg/README.md.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from algorithms.common.client import ServerClient
from algorithms.common.env import load_env
from algorithms.common.errors import AlgorithmError, InputError
from algorithms.common.io import read_input, write_json_output, write_output
from algorithms.common.progress import ProgressReporter

from . import stats, tasks

log = logging.getLogger("algorithms.avg")

USAGE = "usage: python -m algorithms.avg [<csv path> <column> <output path>]"


def prototype(args: list[str]) -> None:
    csv_path, column, output = args
    value = stats.mean(stats.read_column(Path(csv_path), column))
    write_output(Path(output), str(value))  # the bare number, as the prototype wrote
    print(f"mean of {column!r}: {value}")


def rich() -> None:
    env = load_env()
    task = tasks.parse_input(read_input(env.require_path("input_file")))
    output = env.require_path("output_file")
    progress = ProgressReporter(env.progress_file)
    if task.method == "avg":
        result = tasks.run_avg(env, task)
    elif task.method == "partial":
        result = tasks.run_partial(env, task)
    else:
        result = tasks.run_central(env, task, ServerClient.from_env(env), progress)
    write_json_output(output, result)
    print(f"{task.method} of {task.column!r}: {result}")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if len(argv) == 3:
            prototype(argv)
        elif not argv:
            rich()
        else:
            raise InputError(f"expected 0 or 3 arguments, got {len(argv)}\n{USAGE}")
    except AlgorithmError as e:
        print(f"avg: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
