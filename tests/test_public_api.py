"""The public surface: one sorted, complete __all__, and a docstring on every public name."""

from __future__ import annotations

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
