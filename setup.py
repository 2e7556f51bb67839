"""The build's one optional step: with MCE_COMPILE=1, the request path's modules are compiled by mypyc.

    MCE_COMPILE=1 pip install --no-build-isolation .   (mypy and a C compiler installed; not editable)

Anything else installs pure Python, which behaves the same (docs/decisions.md D24). The modules are
listed once, in pyproject.toml's [tool.mce-gateway] compiled.
"""

import os
import tomllib

from setuptools import setup

ext_modules = []
if os.environ.get("MCE_COMPILE") == "1":
    from mypyc.build import mypycify

    with open("pyproject.toml", "rb") as file:
        modules = tomllib.load(file)["tool"]["mce-gateway"]["compiled"]
    ext_modules = mypycify(modules, opt_level="3")

setup(ext_modules=ext_modules)
