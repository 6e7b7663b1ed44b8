"""The artifact is checked on this side before any upload: nothing in it may land or point
outside the release, whatever the remote tar would have done with it."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from autoops import ConfigError
from autoops.deploy._artifact import Artifact


def tarball(path: Path, *members: tuple[str, str, str]) -> Path:
    """A tarball of (kind, name, link target or content) members, built by hand so it can
    hold what a directory never packs to."""
    with tarfile.open(path, "w") as archive:
        for kind, name, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = value.encode()
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "chardev": tarfile.CHRTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            info.linkname = value
            archive.addfile(info)
    return path


@pytest.mark.parametrize(
    ("members", "named"),
    [
        ([("file", "/etc/cron.d/evil", "x")], "/etc/cron.d/evil"),
        ([("file", "../../escape.txt", "x")], "../../escape.txt"),
        ([("file", "app/../../escape.txt", "x")], "app/../../escape.txt"),
        ([("symlink", "storage", "/outside/dir")], "storage"),
        ([("symlink", "config/up", "../../etc")], "config/up"),
        ([("symlink", "here", "."), ("symlink", "up", "here/..")], "up"),
        ([("symlink", "loop-a", "loop-b"), ("symlink", "loop-b", "loop-a")], "loop-"),
        ([("hardlink", "passwd", "/etc/passwd")], "passwd"),
        ([("hardlink", "shadow", "../shadow")], "shadow"),
        ([("chardev", "dev/null", "")], "dev/null"),
        ([("fifo", "queue", "")], "queue"),
        ([("symlink", "web", "public"), ("file", "web/index.php", "x")], "web/index.php"),
    ],
)
def test_a_member_outside_the_release_is_refused_by_name(
    tmp_path: Path, members: list[tuple[str, str, str]], named: str
) -> None:
    path = tarball(tmp_path / "release.tar", *members)

    with pytest.raises(ConfigError, match=r"outside the release|device|below a symlink") as caught:
        Artifact.open(path)

    assert named in str(caught.value)


def test_links_inside_the_release_are_kept(tmp_path: Path) -> None:
    path = tarball(
        tmp_path / "release.tar",
        ("dir", "public", ""),
        ("file", "public/index.html", "hi"),
        ("symlink", "web", "public"),
        ("symlink", "public/self", "../public/index.html"),
        ("hardlink", "public/copy.html", "public/index.html"),
    )

    with Artifact.open(path) as artifact:
        assert artifact.symlinks == {"web", "public/self"}


def test_a_directory_with_a_link_out_of_it_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    app = tmp_path / "app"
    app.mkdir()
    (app / "index.html").write_text("hi")
    os.symlink(outside, app / "storage")

    with pytest.raises(ConfigError, match=r"'storage' -> .*outside the release"):
        Artifact.open(app)


def test_a_shared_path_through_a_symlink_of_the_release_is_refused(tmp_path: Path) -> None:
    path = tarball(
        tmp_path / "release.tar",
        ("dir", "app/storage", ""),
        ("symlink", "storage", "app/storage"),
    )
    with Artifact.open(path) as artifact:
        artifact.refuse_links_on(["storage", "app/storage/uploads"], "shared dir")
        with pytest.raises(ConfigError, match="'storage/uploads' passes through 'storage'"):
            artifact.refuse_links_on(["storage/uploads"], "shared dir")


def test_a_file_that_is_not_a_tarball_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "release.tar.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")

    with pytest.raises(ConfigError, match="not a readable tarball"):
        Artifact.open(path)
