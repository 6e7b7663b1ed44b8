"""What a user installs: the wheel and sdist `python -m build` makes from this checkout carry the
licence, the type marker, runnable tests and an index-friendly description, and nothing local."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import autoops

ROOT = Path(__file__).resolve().parent.parent
LOCAL = (".venv/", "__pycache__/", ".pyc", ".mypy_cache/", ".ruff_cache/", ".pytest_cache/",
          "node_modules/", ".hypothesis/")  # fmt: skip


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not (ROOT / "setup.cfg").is_file():
        pytest.skip("not a source checkout (an installed or unpacked package)")
    out = tmp_path_factory.mktemp("dist")
    # Build from a copy: a build writes build/ and *.egg-info/ into its source directory.
    source = tmp_path_factory.mktemp("source") / "autoops"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", ".*_cache"),
    )
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    return wheel, sdist


def test_the_wheel_carries_the_licence_and_py_typed_and_nothing_local(
    artifacts: tuple[Path, Path],
) -> None:
    with zipfile.ZipFile(artifacts[0]) as wheel:
        names = wheel.namelist()
        metadata = email.message_from_bytes(
            wheel.read(next(name for name in names if name.endswith(".dist-info/METADATA")))
        )

    assert "autoops/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") or
               name.endswith(".dist-info/LICENSE") for name in names)  # fmt: skip
    assert not [name for name in names if any(part in name for part in LOCAL)]
    assert not [name for name in names if name.startswith("tests/")]
    assert metadata["License"] == "MIT"
    description = metadata.get_payload()
    assert isinstance(description, str)
    assert "autoops" in description
    assert "](docs/" not in description
    assert "`docs/sync.md` (in the source distribution)" in description


def test_the_package_version_is_the_one_autoops_reports(artifacts: tuple[Path, Path]) -> None:
    with zipfile.ZipFile(artifacts[0]) as wheel:
        names = wheel.namelist()
        metadata = email.message_from_bytes(
            wheel.read(next(name for name in names if name.endswith(".dist-info/METADATA")))
        )
    assert metadata["Version"] == autoops.__version__


def test_the_sdist_carries_runnable_tests_the_licence_and_nothing_local(
    artifacts: tuple[Path, Path],
) -> None:
    with tarfile.open(artifacts[1]) as sdist:
        names = [name.partition("/")[2] for name in sdist.getnames()]

    for needed in (
        "LICENSE",
        "src/autoops/py.typed",
        "tests/conftest.py",
        "tests/_support/__init__.py",
        "tests/_support/sshd.py",
        "tests/_support/read.php",
        "tests/_support/node/package.json",
        "tests/_support/node/package-lock.json",
        "tests/_support/node/read.js",
        "docs/clients.md",
    ):
        assert needed in names, needed
    assert not [name for name in names if any(part in name for part in LOCAL)]


def test_the_sdists_tests_are_collected_from_the_unpacked_sdist(
    artifacts: tuple[Path, Path], tmp_path: Path
) -> None:
    with tarfile.open(artifacts[1]) as sdist:
        sdist.extractall(tmp_path, filter="data")
    [unpacked] = tmp_path.iterdir()

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "tests/test_packaging.py::" in done.stdout
