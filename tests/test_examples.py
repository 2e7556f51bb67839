"""The examples stay true: every endpoint document validates (test_up.py runs them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.endpoint import load_endpoint

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_documents_validate(path: Path) -> None:
    load_endpoint(path)
