"""Run deploy.py against a local SageMaker and a local S3 server (examples/local_aws.py), with the
multi-model container's models (containers/multi-model/build_model.py). `bash examples/seed-notebook/run.sh`
builds them first.

    .venv/bin/python examples/seed-notebook/run.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from local_aws import BUCKET, ROOT, local_aws  # noqa: E402

BUILD = ROOT / "build" / "multi-model"


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="seed-notebook-"))
    models = [BUILD / "models" / "digits-logreg.tar.gz", BUILD / "models" / "digits-mlp.tar.gz"]
    extra = BUILD / "extra" / "digits-small.tar.gz"
    with local_aws(work) as env:
        deploy = [sys.executable, str(HERE / "deploy.py"), BUCKET, *map(str, models), str(extra)]
        return subprocess.run(deploy, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
