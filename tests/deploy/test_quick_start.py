"""The README's quick start: the first command installs what the server and the demo need,
and nothing that only the tests and benchmarks use (those come with the second, `.[dev]`).

The first command once installed `.[all]`: 143 packages, 3.5 GB, pytest, Playwright, MLflow
and PyTorch included; the server and the demo need 67 (1.7 GB, mostly TensorFlow).
"""

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NAME = PROJECT["name"]
# Used by the tests and benchmarks only; each is large or pulls in a large tree.
TEST_AND_BENCH_TOOLS = {"pytest", "hypothesis", "playwright", "schemathesis", "ruff", "mlflow"}


def quick_start_commands():
    """The commands between the README's quick-start markers, as `.ci/run` reads them."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- quick-start -->(.*?)<!-- /quick-start -->", text, re.S).group(1)
    return [line for line in block.splitlines() if line.startswith("python3 ")]


def installed_extras(command):
    """The extras of `pip install -e ".[a,b]"` in `command`."""
    found = re.search(r'pip install -e "\.\[([^\]]*)\]"', command)
    assert found, f'no `pip install -e ".[...]"` in {command!r}'
    return {extra.strip() for extra in found.group(1).split(",")}


def requirements(extras):
    """Names of the distributions `.[extras]` asks for directly, its own extras followed."""
    names, pending, seen = set(), list(extras), set()
    for requirement in PROJECT["dependencies"]:
        names.add(Requirement(requirement).name.lower())
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in PROJECT["optional-dependencies"][extra]:
            requirement = Requirement(line)
            if requirement.name == NAME:
                pending.extend(requirement.extras)
            else:
                names.add(requirement.name.lower())
    return names


def test_quick_start_has_two_commands_demo_then_tests():
    commands = quick_start_commands()
    assert len(commands) == 2, f"the quick start holds {len(commands)} commands, .ci/run needs 2"
    assert commands[0].endswith("callboard demo"), commands[0]
    assert "pytest" in commands[1] and "dev" in installed_extras(commands[1]), commands[1]


def test_first_command_installs_the_server_and_keras_but_no_test_tools():
    first = requirements(installed_extras(quick_start_commands()[0]))
    assert requirements({"server", "keras"}) <= first, "the demo needs the server and Keras"
    extra_tools = first & TEST_AND_BENCH_TOOLS
    assert not extra_tools, f"the first quick-start command installs test tools {extra_tools}"
    test_only = requirements({"dev"}) - requirements({"server", "keras"})
    assert not first & test_only, f"the first command installs {first & test_only} (dev only)"


def test_second_command_brings_the_test_tools():
    second = requirements(installed_extras(quick_start_commands()[1]))
    assert second >= TEST_AND_BENCH_TOOLS | requirements({"server", "keras"})
