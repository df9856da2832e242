"""Fuzzing the other parsers of untrusted text: the emitter's recipe loader and the proxy's check
of request targets."""
from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

import yaml
from hypothesis import given
from hypothesis import strategies as st

from dummy_proxy.target import check_target
from dummy_server.recipe import RecipeError, parse_recipe
from tests.reliability.payloads import TRAVERSAL, json_values
from tests.reliability.settings import examples, fuzz_settings, record

WHERE = re.compile(r"^r\.yaml(:(\d+|\?))?: ")

yaml_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=15) | st.sampled_from(
    TRAVERSAL)
task_like = st.dictionaries(
    st.sampled_from(["name", "image", "arguments", "input", "databases", "nodes", "repeat",
                     "colour", "Image"]),
    yaml_scalars | st.lists(yaml_scalars, max_size=3) | json_values, max_size=6)
documents = st.one_of(
    st.fixed_dictionaries({"tasks": st.lists(task_like, max_size=3)}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    json_values,
)
raw_text = st.one_of(
    st.text(max_size=200),
    st.text("tasks: -[]{}:,&*!|>'\"#%@`\n imageg", max_size=120),
    st.sampled_from(["tasks: [", "tasks: &a [*a]", "tasks:\n  - !!python/object:os.system x",
                     "tasks:\n\t- image: x", "%YAML 9.9\n---\n", "--- a\n--- b\n", "\ufeff",
                     "tasks:\n  - image: a\n  - image: " + "x" * 10000, "? [a]\n: b\n",
                     "tasks: !!binary AAAA", "a: &x 1\nb: *y\n"]),
)


def test_the_recipe_loader_never_crashes_and_errors_say_where():
    n = {"recipes": 0, "loaded": 0, "refused": 0}

    @fuzz_settings(examples(800, 10000), 10000)
    @given(documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True)) | raw_text)
    def load(text):
        n["recipes"] += 1
        try:
            tasks = parse_recipe(text, "r.yaml")
        except RecipeError as e:
            n["refused"] += 1
            message = str(e)
            assert WHERE.match(message), f"the error does not say where: {message!r}"
            assert len(message) < 2000
            # a line number, or a key path, or an explanation of the empty/invalid document
            assert re.search(r":\d+: |tasks|invalid YAML|empty", message), message
        else:
            n["loaded"] += 1
            assert tasks and all(isinstance(t.body.get("image"), str) for t in tasks)

    load()
    assert n["loaded"] and n["refused"], n
    record("fuzz_recipe_loader", n)


segment = st.sampled_from(["api", "..", ".", "", "%2e%2e", "%2E.", ".%2e", "%2f", "%5c", "\\",
                           "%00", "task", "x", "%252e%252e", "api;", "..;", "%u002e"]) | st.text(
    "aip./%25e\\;", max_size=6)


def test_the_proxy_forwards_nothing_that_could_leave_api():
    """Whatever the target, anything forwarded stays under /api/ after every decoding a server
    might apply (percent-decoding once or twice, dot-segment removal, backslashes as slashes)."""
    n = {"targets": 0, "forwarded": 0}

    @fuzz_settings(examples(2000, 20000), 20000)
    @given(st.sampled_from(["GET", "POST", "CONNECT", "TRACE", "get", "DELETE"]),
           st.one_of(st.lists(segment, max_size=6).map(lambda s: "/" + "/".join(s)),
                     st.text(max_size=40),
                     st.sampled_from(["http://127.0.0.1:1/api/x", "//evil/api", "*",
                                      "127.0.0.1:80", "/api/../x", "/api/%2e%2e/x"])))
    def check(method, target):
        n["targets"] += 1
        verdict = check_target(method, target)
        if verdict.status:
            assert 400 <= verdict.status < 500 and verdict.reason
            return
        n["forwarded"] += 1
        assert method in ("GET", "POST", "DELETE")
        path = target.split("?", 1)[0].split("#", 1)[0]
        for decoded in (path, unquote(path), unquote(unquote(path))):
            norm = posixpath.normpath(decoded.replace("\\", "/"))
            assert norm == "/api" or norm.startswith("/api/"), (target, norm)

    check()
    assert n["forwarded"], n
    record("fuzz_proxy_targets", n)
