import pytest

from dummy_server.recipe import RecipeError, parse_recipe


def test_valid_recipe_with_repeat_and_defaults():
    tasks = parse_recipe(
        "tasks:\n"
        "  - name: avg\n"
        "    image: v6-demo/avg\n"
        "    arguments: [/app/input/csv/default, Age]\n"
        "    input: {column: Age, n: [1, 2]}\n"
        "    databases: [default, db_2]\n"
        "    nodes: [node-a]\n"
        "    repeat: 3\n"
        "  - image: v6-demo/diagnostics\n")
    assert [t.repeat for t in tasks] == [3, 1]
    assert tasks[0].body == {"name": "avg", "image": "v6-demo/avg",
                             "arguments": ["/app/input/csv/default", "Age"],
                             "input": {"column": "Age", "n": [1, 2]},
                             "databases": ["default", "db_2"], "nodes": ["node-a"]}
    assert tasks[1].body == {"image": "v6-demo/diagnostics"}


@pytest.mark.parametrize("text, expected", [
    ("tasks:\n  - image: a\n    repat: 2\n", "r.yaml:3: tasks[0].repat: unknown key"),
    ("tasks:\n  - image: a\n  - image: b\n    repeat: two\n", "r.yaml:4: tasks[1].repeat: expected an integer"),
    ("tasks:\n  - image: a\n    repeat: 0\n", "r.yaml:3: tasks[0].repeat"),
    ("tasks:\n  - name: x\n", "r.yaml:2: tasks[0]: missing required key 'image'"),
    ("tasks:\n  - image: ''\n", "r.yaml:2: tasks[0].image: expected a non-empty string"),
    ("tasks:\n  - image: a\n    databases: [ok, Not-OK]\n", "r.yaml:3: tasks[0].databases[1]"),
    ("tasks:\n  - image: a\n    nodes: node-a\n", "r.yaml:3: tasks[0].nodes: expected a list"),
    ("tasks:\n  - image: a\n    image: b\n", "r.yaml:3: tasks[0].image: key given twice"),
    ("jobs: []\n", "r.yaml:1: jobs: unknown key"),
    ("tasks: []\n", "r.yaml:1: tasks: expected a non-empty list"),
    ("- image: a\n", "r.yaml:1: (top level): expected a mapping"),
    ("tasks:\n  - image: [unclosed\n", "r.yaml:3: invalid YAML"),
    ("", "the recipe is empty"),
])
def test_errors_name_line_and_key(text, expected):
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, "r.yaml")
    assert expected in str(info.value)
