"""The seed notebook's multi-model walk-through, against `mce up examples/multi-model.yaml`, with boto3.

    .venv/bin/python examples/multi_model.py [URL] [--prefix DIR]

1. Invoke the two models under the prefix: the first call to each downloads and loads it, the next is warm.
2. Add ten copies of a third model under a subfolder of the prefix while the endpoint runs (no restart).
3. Make 100 invocations, each with a random TargetModel of the twelve, and print the counts of the top
   label, with the cache hit ratio and what the endpoint did (from its /metrics).

Updating a model means giving it a new name (as the notebook advises): an artifact overwritten in place may
still be served from the cache, as on SageMaker.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import shutil
import time
import urllib.request
from pathlib import Path

import boto3
from sklearn.datasets import load_digits

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "multi-model"
ENDPOINT = "multi-model"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8080")
    parser.add_argument(
        "--prefix", type=Path, default=BUILD / "models", help="the endpoint's ModelDataUrl folder"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=args.url,
        region_name="us-east-1",
        aws_access_key_id="local",  # boto3 signs every request; the gateway checks only with --access
        aws_secret_access_key="local",
    )
    digits = load_digits()
    rows = digits.data[-100:].tolist()

    def predict(model: str, row: list[float]) -> tuple[int, float]:
        started = time.perf_counter()
        response = runtime.invoke_endpoint(
            EndpointName=ENDPOINT,
            TargetModel=model,
            ContentType="application/json",
            Body=json.dumps({"inputs": [row]}),
        )
        answer = json.loads(response["Body"].read())
        return answer["labels"][0], (time.perf_counter() - started) * 1000

    shutil.rmtree(args.prefix / "demo-subfolder", ignore_errors=True)  # what an earlier run added
    print("1. the two models under the prefix: first call (download + load), then warm")
    for model in ("digits-logreg.tar.gz", "digits-mlp.tar.gz"):
        label, first = predict(model, rows[0])
        _, warm = predict(model, rows[0])
        print(
            f"   {model:<22} label {label} (truth {digits.target[-100]}): first {first:7.1f} ms, warm "
            f"{warm:5.1f} ms"
        )

    print("2. ten copies of a third model, added under demo-subfolder/ while the endpoint runs")
    extra = BUILD / "extra" / "digits-small.tar.gz"
    copies = [f"demo-subfolder/digits-small-v{i}.tar.gz" for i in range(1, 11)]
    (args.prefix / "demo-subfolder").mkdir(exist_ok=True)
    for name in copies:
        shutil.copyfile(extra, args.prefix / name)
    models = ["digits-logreg.tar.gz", "digits-mlp.tar.gz", *copies]
    print(f"   the endpoint now has {len(models)} models: {', '.join(models[:3])}, ...")

    print("3. 100 invocations, each with a random TargetModel")
    before = _metrics(args.url)
    pick = random.Random(args.seed)
    labels: collections.Counter[int] = collections.Counter()
    times = []
    correct = 0
    for index in range(100):
        label, took = predict(pick.choice(models), rows[index])
        labels[label] += 1
        times.append(took)
        correct += label == digits.target[-100 + index]
    after = _metrics(args.url)
    hits = after["sagemaker_model_cache_hits_total"] - before["sagemaker_model_cache_hits_total"]
    lookups = after["sagemaker_model_cache_lookups_total"] - before["sagemaker_model_cache_lookups_total"]
    times.sort()
    print("   counts of the top label:", dict(sorted(labels.items())))
    print(f"   accuracy {correct}/100; latency p50 {times[49]:.1f} ms, max {times[-1]:.1f} ms")
    print(f"   cache hit ratio: {hits / lookups:.2f} ({hits:.0f} of {lookups:.0f})")
    print(
        f"   models loaded now: {after['sagemaker_loaded_model_count']:.0f}; "
        f"loads so far: {after['sagemaker_model_loading_seconds_count']:.0f}; "
        f"unloads so far: {after.get('mce_model_unloads_total', 0):.0f}"
    )


def _metrics(url: str) -> dict[str, float]:
    """The endpoint's multi-model numbers, summed over its containers (the gateway's /metrics)."""
    wanted = (
        "sagemaker_model_cache_hits_total",
        "sagemaker_model_cache_lookups_total",
        "sagemaker_loaded_model_count",
        "sagemaker_model_loading_seconds_count",
        "mce_model_unloads_total",
    )
    totals = dict.fromkeys(wanted, 0.0)
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            name = line.split("{", 1)[0]
            if name in totals:
                totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


if __name__ == "__main__":
    main()
