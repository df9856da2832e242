"""Hypothesis strategies for hostile task payloads (CONTRACTS §2 shapes, then broken).

A payload starts as a valid prototype or rich payload and gets mutations: fields dropped, added or
replaced with values of the wrong type, huge strings, odd Unicode, path traversal in every id and
label, unknown images and databases, deep nesting. Every token carries TOKEN_MARK so a test can
check that no error message or log line ever shows it.
"""
from __future__ import annotations

from hypothesis import strategies as st

TOKEN_MARK = "SECRET-TOKEN-7d1f"
DATABASES = ("default", "db-2")
ALLOWED = ("v6-demo/*", "test/*")

TRAVERSAL = ["..", "../", "../../etc/passwd", "/etc/passwd", "a/../b", "..\\..\\x", "%2e%2e%2f",
             "..%2f..%2f", "....//", "/", "./default", "default/..", "~root", "\x00", "default\x00",
             "C:\\Windows", "file:///etc/passwd", "${HOME}", "$(id)", "`id`", "default; rm -rf /",
             "\u202edefault", "ｄｅｆａｕｌｔ", "DEFAULT", "default ", " default", "de\nfault"]

IMAGES = ["v6-demo/avg", "v6-demo/avg:latest", "test/sleeper", "v6-demo/../evil", "evil/miner",
          "docker.io/v6-demo/avg", "V6-DEMO/AVG", "v6-demo/avg@sha256:" + "0" * 64,
          "v6-demo/avg:" + "x" * 200, "localhost:5000/v6-demo/avg", "", " ", "v6-demo//avg",
          "v6-demo/avg:latest\nHost: evil", "../../../bin/sh", "v6-demo/Ävg", "*", "v6-demo/*",
          "127.0.0.1:1/x", "v6-demo/avg;id"]

BAD_IDS = [0, -1, 2**53, 2**53 + 1, 2**63, 2**64, -(2**63), 1.0, 1.5, float("nan"),
           float("inf"), True, False, None, "1", "01", "1e3", " 1", "../1", "1/../2", [], {},
           [1], {"run_id": 1}]

scalars = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=30) | st.sampled_from(TRAVERSAL) | st.sampled_from(BAD_IDS))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15)


def _nest(depth: int) -> object:
    value: object = "deep"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


# what a valid payload may hold: no NUL, no lone surrogates, no NaN
clean_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                     max_size=20)
clean_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | clean_text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(clean_text, children, max_size=4),
    max_leaves=15)

# what a Socket.IO client can send but JSON cannot hold: bytes become binary attachments
binary_json = st.recursive(
    scalars | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15)

huge_strings = st.sampled_from([10_000, 300_000, 1_100_000, 3_000_000]).map(lambda n: "A" * n)
deep_values = st.sampled_from([50, 900, 5000]).map(_nest)
odd_text = st.text(st.characters(codec=None), min_size=1, max_size=40)  # surrogates, controls

wild_values = (json_values | st.sampled_from(TRAVERSAL) | st.sampled_from(BAD_IDS)
               | st.sampled_from(IMAGES) | huge_strings | deep_values | odd_text)


def token() -> st.SearchStrategy[str]:
    return st.text("abcdefXYZ019._-", min_size=0, max_size=20).map(lambda t: TOKEN_MARK + t)


def run_ids() -> st.SearchStrategy[int]:
    # small ranges make repeats (resends of a seen run id) likely too
    return st.integers(1, 300) | st.integers(1, 2**53 - 1)


@st.composite
def prototype(draw) -> dict:
    return {
        "run_id": draw(run_ids()),
        "task_info": draw(st.dictionaries(clean_text, clean_text | st.integers(), max_size=4)),
        "image": draw(st.sampled_from(["v6-demo/avg", "test/sleeper"])),
        "docker_input": draw(clean_text),
        "tmp_vol_name": draw(st.sampled_from(["example-tmp-vol", "tmp", "a-b-c"])),
        "token": draw(token()),
        "databases_to_use": draw(st.lists(st.sampled_from(DATABASES), unique=True, max_size=2)),
    }


@st.composite
def rich(draw) -> dict:
    payload = {
        "run_id": draw(run_ids()),
        "task_id": draw(st.integers(1, 2**53 - 1)),
        "image": draw(st.sampled_from(["v6-demo/avg", "test/sleeper:1.0", "v6-demo/diagnostics"])),
        "databases": draw(st.lists(st.sampled_from(DATABASES), unique=True, max_size=2)),
        "token": draw(token()),
    }
    optional = {
        "parent_id": st.none() | st.integers(1, 2**53 - 1),
        "arguments": st.lists(clean_text, max_size=4),
        "input": clean_json,
        "resources": st.fixed_dictionaries({}, optional={
            "cpu": st.sampled_from(["100m", "1", "2", "0.5", "4"]),
            "memory": st.sampled_from(["64Mi", "1Gi", "8Gi"]),
            "gpu": st.sampled_from([0, 1])}),
        "deadline_seconds": st.integers(1, 300),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            payload[key] = draw(strategy)
    return payload


ALL_KEYS = ["run_id", "task_id", "parent_id", "image", "arguments", "input", "databases", "token",
            "resources", "deadline_seconds", "task_info", "docker_input", "tmp_vol_name",
            "databases_to_use", "target_nodes", "__proto__", "", "RUN_ID", "run_id "]
LABEL_KEYS = ("databases", "databases_to_use")
ID_KEYS = ("run_id", "task_id", "parent_id")


@st.composite
def mutated(draw, base: dict) -> dict:
    """One to four mutations of a payload."""
    payload = dict(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["drop", "add", "replace", "label", "id", "image", "huge",
                                     "traverse-arg"]))
        keys = sorted(payload)
        if kind == "drop" and keys:
            payload.pop(draw(st.sampled_from(keys)))
        elif kind == "add":
            payload[draw(st.sampled_from(ALL_KEYS) | st.text(max_size=12))] = draw(wild_values)
        elif kind == "replace" and keys:
            payload[draw(st.sampled_from(keys))] = draw(wild_values)
        elif kind == "label":
            key = next((k for k in LABEL_KEYS if k in payload), "databases")
            labels = draw(st.lists(st.sampled_from(TRAVERSAL + list(DATABASES) + ["nosuchdb"])
                                   | st.text(max_size=70), min_size=1, max_size=3))
            payload[key] = labels
        elif kind == "id":
            payload[draw(st.sampled_from(ID_KEYS))] = draw(st.sampled_from(BAD_IDS) | st.sampled_from(TRAVERSAL))
        elif kind == "image":
            payload["image"] = draw(st.sampled_from(IMAGES) | odd_text)
        elif kind == "huge":
            payload[draw(st.sampled_from(keys or ["input"]))] = draw(huge_strings)
        elif kind == "traverse-arg":
            value = draw(st.sampled_from(TRAVERSAL))
            if "task_info" in payload:
                payload["task_info"] = {"arg1": value}
            else:
                payload["arguments"] = [value]
                payload["tmp_vol_name"] = value
    return payload


def not_an_object() -> st.SearchStrategy:
    return (scalars | st.lists(json_values, max_size=3) | huge_strings | st.binary(max_size=20))


def payloads() -> st.SearchStrategy:
    """Mostly broken payloads, some valid ones (so the accepting path is fuzzed too)."""
    valid = prototype() | rich()
    return st.one_of(
        valid,
        valid.flatmap(mutated),
        valid.flatmap(mutated),
        valid.flatmap(mutated),
        not_an_object(),
    )
