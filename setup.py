"""Two build steps beyond pyproject.toml's:

- The wheel carries the project's containers (containers/, what the built-in image map names) inside the
  package, at gateway/_bundled/containers, so `mce up` runs the `mce/*` images and SageMaker's framework
  images from an installed package as from a clone (gateway/control/images.py). An editable install reads
  them from the clone itself.
- A wheel has the request path's modules compiled by mypyc (docs/decisions.md D24, D54): `pip install .`
  or `pip install mce-gateway` from source compiles them where a C compiler and Python's headers are
  present, and says so on stderr and installs pure Python where they are not; the two behave the same.
  An editable install (`pip install -e .`, the development tree) is never compiled: a compiled module
  beside its source would shadow every edit. MCE_COMPILE=1 compiles or fails; MCE_COMPILE=0 never
  compiles. The modules are listed once, in pyproject.toml's [tool.mce-gateway] compiled.
"""

import os
import shutil
import sys
import sysconfig
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


# the commands that build modules (pip runs egg_info and dist_info first, for the metadata alone)
BUILDS = {"bdist_wheel", "build", "build_ext", "install"}


def why_not_compiled() -> tuple[str, bool] | None:
    """Why this run of setup.py compiles nothing, and whether to say so (None: it compiles)."""
    choice = os.environ.get("MCE_COMPILE", "")
    if "editable_wheel" in sys.argv:
        return "an editable install is never compiled", False
    if not BUILDS.intersection(sys.argv):
        return "nothing is built", False
    if choice == "1":
        return None
    if choice == "0":
        return "MCE_COMPILE=0", False
    try:
        import mypyc  # noqa: F401
    except ImportError:
        return "mypyc is not installed", True
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})", True
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "no Python headers (Python.h)", True
    return None


ext_modules = []
why = why_not_compiled()
if why is None:
    from mypyc.build import mypycify

    with open("pyproject.toml", "rb") as file:
        modules = tomllib.load(file)["tool"]["mce-gateway"]["compiled"]
    ext_modules = mypycify(modules, opt_level="3")
elif why[1]:
    print(f"mce-gateway: the request path is not compiled ({why[0]}): pure Python", file=sys.stderr)

setup(ext_modules=ext_modules, cmdclass={"build_py": BuildWithContainers})
