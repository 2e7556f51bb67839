"""Where a container of CreateModel comes from locally: its `Image`, matched against an image map.

    Images:
      - Image: "mce/pytorch-*"          # fnmatch pattern; the first entry that matches wins
        Backend: {Protocol: ..., Model: ..., Launch: {Command: [...]}}   # the endpoint document's, no Url
        Emulated: false                 # true: Backend runs a stand-in for the image, not the image

A user's map (`--images FILE`) comes first, then the built-in one (images.yaml: the project's own
containers). Command arguments that name files next to the map become absolute, as in an endpoint
document. An image no entry matches runs under Docker if it can (gateway.launch.docker); else the
endpoint fails with a reason that says how to make it run.

Where the image itself runs (Kubernetes, `mce render kubernetes --from`), an `Emulated` entry does not
apply: its Backend describes how mce stands in for the image natively (SageMaker's framework containers),
and the image itself honours the SageMaker contract.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError as PydanticValidationError

from gateway.endpoint import BackendSpec, document_issue
from gateway.launch.plan import command

BUILT_IN = Path(__file__).with_name("images.yaml")
# the built-in map's paths (containers/...) are from the clone's root, or, in an installed wheel, from the
# copy of containers/ the build puts inside the package (setup.py)
REPOSITORY = Path(__file__).resolve().parents[2]
BUNDLED = Path(__file__).resolve().parents[1] / "_bundled"


def built_in_base() -> Path | None:
    """Where the built-in map's paths start; None when the project's containers are not here."""
    for base in (REPOSITORY, BUNDLED):
        if (base / "containers").is_dir():
            return base
    return None


class ImageMapError(Exception):
    """An image map that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class ImageEntry:
    pattern: str
    backend: dict[str, Any]  # a BackendSpec without Url, paths made absolute
    source: str  # the map it came from, for messages
    emulated: bool = False  # the Backend stands in for the image natively (Kubernetes runs the image)


class ImageMap:
    def __init__(self, entries: list[ImageEntry]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, user: Path | None = None) -> ImageMap:
        entries = _read(user, user.resolve().parent) if user is not None else []
        base = built_in_base()
        if base is not None:
            entries += _read(BUILT_IN, base)
        return cls(entries)

    def backend(self, image: str, *, the_image_runs: bool = False) -> dict[str, Any] | None:
        """The Backend section that runs `image`, or None. `the_image_runs`: the image itself will run
        (not a stand-in), so an emulated entry says nothing about it."""
        for entry in self.entries:
            if fnmatch.fnmatchcase(image, entry.pattern):
                return None if entry.emulated and the_image_runs else entry.backend
        return None

    def unknown(self, image: str, docker: str) -> str:
        """Why `image` cannot run (`docker`: why Docker cannot run it), and the two ways to make it run."""
        return (
            f"Image {image} is not in the image map, and Docker cannot run it: {docker}. To run it, add an "
            "entry for it to the map given with `mce up --images FILE` (Image: a pattern, Backend: how to "
            "start it natively), or make it available to Docker (an engine that answers the docker command, "
            "with the image built, loaded or pullable)."
        )


def _read(path: Path, base: Path) -> list[ImageEntry]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ImageMapError(f"{path}: cannot read the image map: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ImageMapError(f"{path}: not valid YAML: {exc}") from None
    items = raw.get("Images") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise ImageMapError(f"{path}: expected `Images:` with a list of {{Image, Backend}} entries")
    entries = []
    for index, item in enumerate(items):
        where = f"{path}: Images[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("Image"), str):
            raise ImageMapError(f"{where}: each entry needs Image (a pattern) and Backend")
        backend = item.get("Backend")
        if not isinstance(backend, dict) or "Url" in backend:
            raise ImageMapError(f"{where}: Backend is the endpoint document's Backend, without Url")
        try:
            BackendSpec.model_validate(backend)
        except PydanticValidationError as exc:
            issues = "; ".join(f"Backend.{i.path}: {i.message}" for i in map(document_issue, exc.errors()))
            raise ImageMapError(f"{where}: {issues}") from None
        launch = backend.get("Launch")
        if isinstance(launch, dict):
            commands = {key: command(launch[key], base) for key in ("Command", "Prepare") if key in launch}
            backend = {**backend, "Launch": {**launch, **commands}}
        emulated = item.get("Emulated", False)
        if not isinstance(emulated, bool):
            raise ImageMapError(f"{where}: Emulated is true or false")
        entries.append(ImageEntry(item["Image"], backend, str(path), emulated))
    return entries
