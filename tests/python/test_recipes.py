"""The scheduled-job recipes of docs/recipes/ are valid and use only flags that exist.

Each YAML recipe must parse; every `coldvault backup …` command line in a recipe (YAML or
shell) may only use flags that `coldvault backup --help` lists.
"""

import os
import pathlib
import re
import shlex
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
RECIPES = ROOT / "docs" / "recipes"
BINARY = os.environ.get("COLDVAULT_BIN", str(ROOT / "target" / "debug" / "coldvault"))


def backup_flags():
    help_text = subprocess.run(
        [BINARY, "backup", "--help"], check=True, capture_output=True, text=True
    ).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text)) | set(
        re.findall(r"(?<![\w-])(-[a-zA-Z])\b", help_text)
    )


def strings(node):
    """Every string in a parsed YAML document."""
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


def backup_commands(text):
    """Every `coldvault backup …` command in a block of shell text, as argument lists."""
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        if "coldvault backup" in line:
            tail = line[line.index("coldvault backup") + len("coldvault backup") :]
            tail = tail.split(">")[0]
            yield shlex.split(tail.replace("${{", "X").replace("}}", "X"))


def test_every_yaml_recipe_parses():
    recipes = sorted(RECIPES.glob("*.y*ml"))
    assert len(recipes) >= 3
    for recipe in recipes:
        documents = list(yaml.safe_load_all(recipe.read_text()))
        assert documents and all(doc for doc in documents), recipe


@pytest.mark.parametrize(
    "recipe", sorted(p.name for p in RECIPES.iterdir()), ids=lambda n: n
)
def test_recipe_uses_only_existing_flags(recipe):
    flags = backup_flags()
    path = RECIPES / recipe
    text = path.read_text()
    commands = []
    if path.suffix in (".yaml", ".yml"):
        for doc in yaml.safe_load_all(text):
            for value in strings(doc):
                commands += list(backup_commands(value))
            # A container's args list: the whole list is one command line.
            for value in _arg_lists(doc):
                if value[:1] == ["backup"]:
                    commands.append(value[1:])
    else:
        commands = list(backup_commands(text))
    assert commands, f"{recipe} runs coldvault backup"
    for args in commands:
        used = [a.split("=")[0] for a in args if a.startswith("-")]
        unknown = [f for f in used if f not in flags]
        assert not unknown, f"{recipe}: unknown flags {unknown}"


def _arg_lists(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "args" and isinstance(value, list):
                yield [str(v) for v in value]
            else:
                yield from _arg_lists(value)
    elif isinstance(node, list):
        for value in node:
            yield from _arg_lists(value)
