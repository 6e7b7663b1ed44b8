"""The package description for an index: README.md without links that only work in a checkout.

autoops has no public home yet, so a relative link (``docs/sync.md``) has nothing to point to on
a package index: it is written as the file's name instead (docs/ ships in the sdist). Everything
else is in setup.cfg.
"""

import re
from pathlib import Path

from setuptools import setup

_RELATIVE_LINK = re.compile(r"\[([^\]]+)\]\((?![a-z]+:|#)([^)#\s]+)(#[^)\s]*)?\)")


def _unlinked(link: re.Match[str]) -> str:
    text, target = link[1], link[2]
    if text.strip("`") == target:
        return f"`{target}` (in the source distribution)"
    return f"{text} (`{target}` in the source distribution)"


def long_description() -> str:
    text = Path(__file__).with_name("README.md").read_text(encoding="utf-8")
    return _RELATIVE_LINK.sub(_unlinked, text)


setup(long_description=long_description())
