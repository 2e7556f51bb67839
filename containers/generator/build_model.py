"""The generator container's model: a word-level bigram model of the Zen of Python (the `this` module,
in every Python), the count of each word after each word, so the example streams really generated
tokens with no download. Deterministic: the same file every time.

    python containers/generator/build_model.py [--out build/generator]   -> model.json
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import io
import itertools
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "build" / "generator"


def corpus() -> list[str]:
    """The Zen's words and punctuation, lower-cased, one sentence end as `.`."""
    with contextlib.redirect_stdout(io.StringIO()):  # importing it prints the poem
        import this
    text = codecs.decode(this.s, "rot13")
    return re.findall(r"[a-z']+|[.,!-]", text.lower())


def train(words: list[str]) -> dict[str, object]:
    following: dict[str, Counter[str]] = defaultdict(Counter)
    for previous, word in itertools.pairwise(words):
        following[previous][word] += 1
    vocabulary = sorted(set(words))
    return {
        "vocabulary": vocabulary,
        "next": {word: dict(sorted(counts.items())) for word, counts in sorted(following.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    model = out / "model.json"
    text = json.dumps(train(corpus()), sort_keys=True)
    if not model.exists() or model.read_text() != text:
        model.write_text(text)
    print(f"generator model: {model}")


if __name__ == "__main__":
    main()
