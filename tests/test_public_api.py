"""The public surface: one sorted, complete __all__, and a docstring on every public name."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil

import autoops


def test_all_is_sorted() -> None:
    assert list(autoops.__all__) == sorted(autoops.__all__)


def test_all_has_no_duplicates_and_every_name_exists() -> None:
    assert len(set(autoops.__all__)) == len(autoops.__all__)
    for name in autoops.__all__:
        assert hasattr(autoops, name), name


def test_every_subpackage_export_is_exported_from_autoops() -> None:
    for module_info in pkgutil.iter_modules(autoops.__path__):
        if module_info.name.startswith("_") or module_info.name == "cli":
            continue
        module = importlib.import_module(f"autoops.{module_info.name}")
        missing = set(getattr(module, "__all__", ())) - set(autoops.__all__)
        assert not missing, f"autoops.{module_info.name} exports {missing} that autoops does not"


def test_every_public_name_has_a_docstring() -> None:
    for name in autoops.__all__:
        obj = getattr(autoops, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"


def test_the_package_ships_type_information() -> None:
    assert (importlib.resources.files("autoops") / "py.typed").is_file()


def test_importing_autoops_loads_no_capability_until_used() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, autoops\n"
        "heavy = ['fabric', 'paramiko', 'jinja2', 'zstandard', 'autoops.deploy']\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
        "autoops.Deployer\n"
        "print('fabric' in sys.modules)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert output == ["[]", "True"]


def _init_lists() -> tuple[dict[str, str], dict[str, str], dict[str, str], list[str]]:
    """The eager imports, the type-checking imports and ``_LAZY`` (name -> module) and
    ``__all__`` of autoops/__init__.py, read from its source."""
    tree = ast.parse(inspect.getsource(autoops))
    eager: dict[str, str] = {}
    typed: dict[str, str] = {}
    lazy: dict[str, str] = {}
    listed: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            eager.update({alias.name: f".{node.module}" for alias in node.names})
        elif isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for inner in node.body:
                assert isinstance(inner, ast.ImportFrom)
                typed.update({alias.name: f".{inner.module}" for alias in inner.names})
        elif isinstance(node, ast.AnnAssign | ast.Assign):
            target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
            if isinstance(target, ast.Name) and target.id == "_LAZY":
                lazy = ast.literal_eval(node.value)  # type: ignore[arg-type]
            elif isinstance(target, ast.Name) and target.id == "__all__":
                listed = ast.literal_eval(node.value)  # type: ignore[arg-type]
    return eager, typed, lazy, listed


def test_each_lazy_name_is_loaded_from_the_module_it_is_type_checked_from() -> None:
    _, typed, lazy, _ = _init_lists()
    assert lazy == typed


def test_all_lists_exactly_the_eager_and_the_lazy_names() -> None:
    eager, _, lazy, listed = _init_lists()
    public = {name for name in eager if not name.startswith("_")}
    assert sorted(listed) == sorted(public | set(lazy))
