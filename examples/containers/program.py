"""The example containers' entrypoint in Docker: runs the script SAGEMAKER_PROGRAM names (as SageMaker's
framework containers choose their entry script), with the arguments after `serve`.

    docker run -e SAGEMAKER_PROGRAM=preprocess.py mce/example-containers serve
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

if __name__ == "__main__":
    program = os.environ.get("SAGEMAKER_PROGRAM")
    here = Path(__file__).resolve().parent
    if not program or not (here / program).is_file():
        sys.exit(
            f"program.py: SAGEMAKER_PROGRAM must name one of {sorted(p.name for p in here.glob('*.py'))}"
        )
    args = sys.argv[1:]
    if args[:1] == ["serve"]:
        args = args[1:]
    # PID 1 in a container ignores SIGTERM unless it handles it; SageMaker stops a container with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.argv = [str(here / program), *args]
    sys.path.insert(0, str(here))
    runpy.run_path(str(here / program), run_name="__main__")
