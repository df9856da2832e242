"""`python -m algorithms.diagnostics`: run every check, write the report to OUTPUT_FILE as JSON
`[{name, ok, detail}]` and a summary to stdout. Exit 0 whatever the checks say (the report is the
result); 2 for unusable input, 5 when the report cannot be written."""
from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from algorithms.common.env import AlgorithmEnv, load_env
from algorithms.common.errors import AlgorithmError, EnvError, OutputError
from algorithms.common.io import read_input, write_output
from algorithms.common.progress import ProgressReporter

from . import dns_probe, local, network
from .probes import parse_probes
from .report import Check, summary


def lenient_env(environ: Mapping[str, str]) -> AlgorithmEnv:
    """The env, or only its paths when some variable is malformed (env_present reports that)."""
    try:
        return load_env(environ)
    except EnvError:
        paths = {field: Path(environ[var]) for field, var in (
            ("input_file", "INPUT_FILE"), ("token_file", "TOKEN_FILE"),
            ("output_dir", "OUTPUT_DIR"), ("output_file", "OUTPUT_FILE"), ("tmp_dir", "TMP_DIR"))
            if environ.get(var)}
        return AlgorithmEnv(**paths)


def run_checks(env: AlgorithmEnv, environ: Mapping[str, str], task_input: object) -> list[Check]:
    settings = parse_probes(task_input, environ)
    progress = ProgressReporter(env.progress_file)
    progress.report("local checks", 0.0)
    checks = [
        local.check_env(environ),
        local.check_input_readable(env),
        local.check_input_read_only(env),
        local.check_writable("output_writable", env.output_dir),
        local.check_writable("tmp_writable", env.tmp_dir),
        local.check_token(env),
        local.check_non_root(),
        local.check_root_read_only(),
        local.check_no_service_account(),
    ]
    progress.report("network checks", 0.5)
    checks.append(network.check_proxy(env, timeout=max(settings.timeout, 5.0)))
    checks += network.isolation_checks(settings)
    progress.report("dns exfiltration", 0.8)
    checks += dns_probe.dns_checks(settings.dns, timeout=settings.timeout)
    progress.report("done", 1.0)
    return checks


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    environ = dict(os.environ)
    env = lenient_env(environ)
    try:
        task_input = read_input(env.input_file) if env.input_file else None
        checks = run_checks(env, environ, task_input)
    except AlgorithmError as e:
        print(f"diagnostics: error: {e}", file=sys.stderr)
        return e.exit_code
    print(summary(checks))
    report = json.dumps([c.to_json() for c in checks], indent=1) + "\n"
    try:
        if env.output_file is None:
            raise OutputError("OUTPUT_FILE is not set; the report is on stdout only")
        write_output(env.output_file, report)
    except OutputError as e:
        sys.stdout.write(report)
        print(f"diagnostics: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
