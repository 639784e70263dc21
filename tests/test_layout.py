"""The package's layout is its architecture: parts import only downward, and SQL lives in sql/ and migrations/."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "memlayer"

# Lowest first: a part may import the parts before it, never one after it.
PARTS = ("storage", "web", "auth", "providers", "memory", "assistant")
TOP = len(PARTS)  # blueprints, the CLI and the factory stand above every part
BASE = ("config", "version")  # settings anyone may read

SQL_STATEMENT = re.compile(
    r"\b(SELECT\b.+\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|ALTER\s+TABLE)\b",
    re.DOTALL,
)


def module_name(path: Path) -> str:
    """The dotted name of a module file under memlayer/."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> int | None:
    """Where a memlayer module stands: its part's index, TOP for the layer above the parts, None for BASE."""
    first = module.split(".")[1] if module.count(".") else ""
    if first in BASE:
        return None
    if first in PARTS:
        return PARTS.index(first)
    return TOP


def memlayer_imports(path: Path) -> set[str]:
    """Every memlayer module a file imports (`from memlayer.x import y` counts y when it is a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("memlayer."))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("memlayer"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    PACKAGE.parent / candidate.replace(".", "/") / "__init__.py"
                ).exists()
                names.add(candidate if is_module else node.module)
    return names - {"memlayer"}


def layout_violations(files: dict[str, set[str]]) -> list[str]:
    """The rules the imports `files` (module -> modules it imports) break, one sentence each."""
    problems = []
    for module, imported in sorted(files.items()):
        own_rank = rank(module)
        for target in sorted(imported):
            target_rank = rank(target)
            is_blueprint = target.startswith("memlayer.blueprints.")
            if is_blueprint and (module.startswith("memlayer.blueprints.") or own_rank != TOP):
                problems.append(f"{module} imports the blueprint {target}")
            elif target_rank is None:
                continue
            elif own_rank is None:
                problems.append(f"{module} is a base module but imports {target}")
            elif target_rank > own_rank:
                problems.append(f"{module} imports {target}, which stands above it")
    return problems


def package_imports() -> dict[str, set[str]]:
    """Module -> the memlayer modules it imports, for every module of the package."""
    return {module_name(path): memlayer_imports(path) for path in PACKAGE.rglob("*.py")}


def test_every_part_imports_only_the_parts_below_it():
    assert layout_violations(package_imports()) == []


@pytest.mark.parametrize(
    "module, imported, broken",
    [
        ("memlayer.storage.db", {"memlayer.web.errors"}, "stands above it"),
        ("memlayer.memory.recall", {"memlayer.assistant.quota"}, "stands above it"),
        ("memlayer.assistant.streaming", {"memlayer.blueprints.messages"}, "imports the blueprint"),
        ("memlayer.blueprints.chats", {"memlayer.blueprints.messages"}, "imports the blueprint"),
        ("memlayer.config", {"memlayer.storage.db"}, "base module"),
    ],
)
def test_the_rule_check_catches_an_import_that_runs_upward(module, imported, broken):
    files = package_imports() | {module: imported}
    assert any(broken in problem for problem in layout_violations(files))


def test_every_part_says_what_it_is_for():
    for part in PARTS:
        init = PACKAGE / part / "__init__.py"
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and "\n" not in docstring.strip(), f"{part}/__init__.py needs a one-line docstring"


def test_modules_stand_in_their_parts():
    loose = sorted(path.stem for path in PACKAGE.glob("*.py"))
    assert loose == ["__init__", "__main__", "app", "cli", "config", "version"]


def test_sql_lives_only_in_sql_and_migrations():
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_STATEMENT.search(node.value):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


def test_the_factory_leaves_every_part_reachable_by_its_name():
    import importlib

    import memlayer
    import memlayer.app  # noqa: F401  (the factory imports every part)

    for part in PARTS:
        assert getattr(memlayer, part) is importlib.import_module(f"memlayer.{part}")
