"""Two build steps beyond pyproject.toml's:

- The wheel carries the project's containers (containers/, what the built-in image map names) inside the
  package, at gateway/_bundled/containers, so `mce up` runs the `mce/*` images and SageMaker's framework
  images from an installed package as from a clone (gateway/control/images.py). An editable install reads
  them from the clone itself.
- With MCE_COMPILE=1, the request path's modules are compiled by mypyc:

    MCE_COMPILE=1 pip install --no-build-isolation .   (mypy and a C compiler installed; not editable)

  Anything else installs pure Python, which behaves the same (docs/decisions.md D24). The modules are
  listed once, in pyproject.toml's [tool.mce-gateway] compiled.
"""

import os
import shutil
import tomllib
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONTAINERS = Path(__file__).resolve().parent / "containers"


class BuildWithContainers(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or not CONTAINERS.is_dir():
            return  # editable: the clone's own containers/ is read in place
        target = Path(self.build_lib) / "gateway" / "_bundled" / "containers"
        shutil.rmtree(target, ignore_errors=True)
        # the Docker base images' stand-ins (bases/) are for building images, not for running containers
        shutil.copytree(CONTAINERS, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "bases"))


ext_modules = []
if os.environ.get("MCE_COMPILE") == "1":
    from mypyc.build import mypycify

    with open("pyproject.toml", "rb") as file:
        modules = tomllib.load(file)["tool"]["mce-gateway"]["compiled"]
    ext_modules = mypycify(modules, opt_level="3")

setup(ext_modules=ext_modules, cmdclass={"build_py": BuildWithContainers})
