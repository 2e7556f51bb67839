"""The PyTorch container's entrypoint: TorchServe on the ports SageMaker hands out. Docker and native alike.

Reads the environment SageMaker gives a container of a multi-container endpoint and writes TorchServe's
config from it:

    SAGEMAKER_BIND_TO_PORT     inference REST API, incl. SageMaker's /ping and /invocations (default 8080)
    SAGEMAKER_SAFE_PORT_RANGE  first..first+3: management, metrics, gRPC inference, gRPC management
                               (default 8081, 8082, 7070, 7071)
    SAGEMAKER_MULTI_MODEL      "true": start with no model loaded (models are loaded on demand)
    MCE_MODEL_DIR              the model store, *.mar files (default /opt/ml/model)
    MCE_RUN_DIR                config and TorchServe's own files (default /tmp/torchserve)
    MCE_BIND_ADDRESS           address to listen on (default 0.0.0.0; native launch uses 127.0.0.1)

Token authorization is off and the model API on (both needed locally, see shared/spec/backends.md), no
config snapshots, logs at WARN on stdout. TorchServe's launcher does not pass SIGTERM on to java, so this
process does: on SIGTERM or SIGINT it stops java and the launcher by PID, and kills java if it has not gone
within the grace period. Standard library only: it runs in the official TorchServe image unchanged.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

GRACE = 25.0  # below SageMaker's 30 s between SIGTERM and SIGKILL

LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %c - %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="off"/>
    <Logger name="MODEL_METRICS" level="off"/>
    <Logger name="TS_METRICS" level="off"/>
    <Logger name="MODEL_LOG" level="{model_log}"/>
    <Root level="warn"><AppenderRef ref="stdout"/></Root>
  </Loggers>
</Configuration>
"""


def ports() -> dict[str, int]:
    bind = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    safe = os.environ.get("SAGEMAKER_SAFE_PORT_RANGE")
    if safe:
        first, last = (int(part) for part in safe.split("-", 1))
        if last - first < 3:
            raise SystemExit(f"SAGEMAKER_SAFE_PORT_RANGE={safe}: TorchServe needs 4 ports in it")
        extra = [first, first + 1, first + 2, first + 3]
    else:
        extra = [8081, 8082, 7070, 7071]
    return {
        "inference": bind,
        "management": extra[0],
        "metrics": extra[1],
        "grpc": extra[2],
        "grpc_management": extra[3],
    }


def base_config(address: str) -> list[str]:
    """TorchServe's settings on SageMaker's ports, for a local run (containers/pytorch-inference too)."""
    p = ports()
    return [
        f"inference_address=http://{address}:{p['inference']}",
        f"management_address=http://{address}:{p['management']}",
        f"metrics_address=http://{address}:{p['metrics']}",
        f"grpc_inference_address={address}",
        f"grpc_inference_port={p['grpc']}",
        f"grpc_management_address={address}",
        f"grpc_management_port={p['grpc_management']}",
        "disable_token_authorization=true",
        "enable_model_api=true",
        "default_workers_per_model=1",
        "install_py_dep_per_model=false",
        "max_request_size=6553600",
        "max_response_size=6553600",
        "vmargs=-Xmx512m -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError",
    ]


def write_config(run_dir: Path, lines: list[str], model_log: str = "warn") -> Path:
    """TorchServe's config and log settings; `model_log` is the level of the workers' own output (info
    shows what a handler prints)."""
    config = run_dir / "config.properties"
    config.write_text("\n".join(lines) + "\n")
    (run_dir / "log4j2.xml").write_text(LOG4J2.replace("{model_log}", model_log))
    return config


def java_pid(run_dir: Path) -> int | None:
    """TorchServe's launcher writes java's PID to $TMPDIR/.model_server.pid; TMPDIR is the run directory."""
    try:
        return int((run_dir / ".model_server.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def main() -> int:
    model_dir = Path(os.environ.get("MCE_MODEL_DIR", "/opt/ml/model")).resolve()
    run_dir = Path(os.environ.get("MCE_RUN_DIR", "/tmp/torchserve")).resolve()
    address = os.environ.get("MCE_BIND_ADDRESS", "0.0.0.0")
    multi_model = os.environ.get("SAGEMAKER_MULTI_MODEL", "").lower() == "true"
    if not model_dir.is_dir():
        print(f"serve.py: model directory {model_dir} does not exist (MCE_MODEL_DIR)", file=sys.stderr)
        return 2
    if not multi_model and not any(model_dir.glob("*.mar")):
        print(
            f"serve.py: no *.mar model archive in {model_dir}; build it with containers/pytorch/build",
            file=sys.stderr,
        )
        return 2
    launcher_path = shutil.which("torchserve") or str(Path(sys.executable).with_name("torchserve"))
    if not Path(launcher_path).exists():
        print("serve.py: the torchserve command is missing; install torchserve==0.12.0", file=sys.stderr)
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    config = write_config(
        run_dir,
        [*base_config(address), f"model_store={model_dir}", f"load_models={'' if multi_model else 'all'}"],
    )
    return run(launcher_path, config, run_dir, ["--model-store", str(model_dir)])


RETRY_FAILED = "Auto recovery failed again"  # TorchServe, each time a model's worker fails to come back
RETRIES = 2  # then (three attempts in all) the model is given up (run(give_up=True))
EXCEPTION = re.compile(r"MODEL_LOG - ((?:\w+\.)*\w*(?:Error|Exception)\b.*)")  # a worker's Python error


def run(
    launcher_path: str,
    config: Path,
    run_dir: Path,
    extra: list[str],
    env: dict[str, str] | None = None,
    give_up: bool = False,
) -> int:
    """TorchServe in the foreground with `config`, its own files in `run_dir`, until it exits; SIGTERM
    and SIGINT stop java and the launcher (a shared step: containers/pytorch-inference uses it too).

    With `give_up`, TorchServe's output passes through this process, and a model whose worker fails
    RETRIES + 1 times stops it (TorchServe itself retries forever, so the container would never get
    ready nor say why): exit status 2, the last line naming the model's own error."""
    (run_dir / ".model_server.pid").unlink(missing_ok=True)
    environment = {
        **(env or os.environ),
        "TMPDIR": str(run_dir),
        "LOG_LOCATION": str(run_dir),
        "METRICS_LOCATION": str(run_dir),
    }
    launcher = subprocess.Popen(
        [
            launcher_path,
            "--foreground",
            "--ncs",
            "--ts-config",
            str(config),
            *extra,
            "--log-config",
            str(run_dir / "log4j2.xml"),
        ],
        env=environment,
        cwd=run_dir,
        stdout=subprocess.PIPE if give_up else None,
        stderr=subprocess.STDOUT if give_up else None,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        for pid in (java_pid(run_dir), launcher.pid):
            if pid is not None and alive(pid):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failures, first_error = 0, ""
    if launcher.stdout is not None:
        for raw in launcher.stdout:
            sys.stdout.buffer.write(raw)
            sys.stdout.flush()
            line = raw.decode("utf-8", "replace").rstrip()
            found = EXCEPTION.search(line)
            if found and not first_error:
                first_error = found[1]  # the model's own error, before the worker's "500 - ..." one
            if RETRY_FAILED in line:
                failures += 1
                if failures == RETRIES:
                    stop(signal.SIGTERM, None)
    code = launcher.wait()
    java = java_pid(run_dir)
    if java is not None:
        deadline = time.monotonic() + GRACE
        while alive(java) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(java):
            os.kill(java, signal.SIGKILL)
    if failures >= RETRIES:
        why = first_error or "its log above says why"
        print(f"serve.py: the model failed to load {RETRIES + 1} times: {why}", file=sys.stderr)
        return 2
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
