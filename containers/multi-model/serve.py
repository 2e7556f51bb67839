"""Run Multi Model Server natively as a SageMaker multi-model container: the whole API on one port.

This is how the multi-model container runs outside Docker (the image uses dockerd-entrypoint.py, see the
Dockerfile). It reads:

    SAGEMAKER_BIND_TO_PORT   the one port for everything (default 8080; MMS refuses ports >= 32767)
    MCE_BIND_ADDRESS         address to listen on (default 0.0.0.0; native launch uses 127.0.0.1)
    MCE_RUN_DIR              config, logs, pid file and MMS's temporary files (default /tmp/mms)
    MCE_LOG_LEVEL            MMS and model-worker log level on stdout (default warn; access log always off)
    MODEL_SERVER_MAX_MODELS  passed through to the handler: models loaded at once before a load gets 507

and writes an MMS config with `inference_address` and `management_address` on the same address and port.
MMS then serves inference (`GET /ping`, `POST /models/{name}/invoke`) and management (`GET|POST /models`,
`GET|DELETE /models/{name}`) from one listener, which is the SageMaker multi-model contract (spec
section 4.1) and what MMS's own `configs/sagemaker_config.properties` and sagemaker-inference do. We do not
call sagemaker_inference's `start_model_server`: it hard-codes 0.0.0.0 (shared/spec/backends.md).
`model_store=/` resolves a load's absolute `url` as given; no model is loaded at start.

Stopping: `multi-model-server --foreground` waits on java, but killing java does not stop the python model
workers (backends.md). This process makes itself a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`), so
workers orphaned by java's exit become our children; on SIGTERM/SIGINT, or when java exits on its own, it
terminates java, then every remaining descendant by PID, and kills what is left after a grace period.
Standard library plus psutil (which MMS itself requires).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

import psutil

HERE = Path(__file__).resolve().parent
HANDLER = "model_handler:handle"
GRACE = 20.0  # seconds for java, then the workers, to exit; below SageMaker's 30 s before SIGKILL
WORKER_GRACE = 3.0
PR_SET_CHILD_SUBREAPER = 36
MMS_PORT_LIMIT = 32767  # model-server.jar's Connector.parse rejects ports >= 32767 ("Invalid port number")

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
    <Logger name="MMS_METRICS" level="off"/>
    <Logger name="MODEL_LOG" level="{level}"/>
    <Logger name="io.netty" level="error"/>
    <!-- MMS logs every worker start and stop at WARN as attachIOStreams()/terminateIOStreams(): not news -->
    <Logger name="com.amazonaws.ml.mms.wlm.WorkerLifeCycle" level="{level}">
      <RegexFilter regex=".*(attach|terminate)IOStreams.*" onMatch="DENY" onMismatch="NEUTRAL"/>
    </Logger>
    <Logger name="org.apache" level="off"/>
    <Root level="{level}"><AppenderRef ref="stdout"/></Root>
  </Loggers>
</Configuration>
"""


def write_config(run_dir: Path, address: str, port: int, log_level: str) -> Path:
    config = run_dir / "mms.properties"
    config.write_text(
        "\n".join(
            [
                f"inference_address=http://{address}:{port}",
                f"management_address=http://{address}:{port}",
                "model_store=/",
                f"default_service_handler={HANDLER}",
                "default_workers_per_model=1",
                "decode_input_request=false",
                "max_request_size=6291456",  # SageMaker's 6 MB invocation payload cap
                "max_response_size=6291456",
                "unregister_model_timeout=120",
                "vmargs=-Xmx256m -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -XX:-UseContainerSupport",
                "",
            ]
        )
    )
    (run_dir / "log4j2.xml").write_text(LOG4J2.replace("{level}", log_level))
    return config


def become_subreaper() -> None:
    """Adopt orphaned descendants (the workers java leaves behind) so they can be found and stopped."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def stop_descendants(grace: float) -> None:
    """Terminate every process below this one by PID, then kill whatever outlives `grace`."""
    processes = psutil.Process().children(recursive=True)
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)


def wait_for(launcher: subprocess.Popen[bytes]) -> int:
    """Wait for the launcher, reaping adopted orphans meanwhile (as a subreaper we must, or they stay
    zombies).

    MMS forks a child per worker connection; when a load fails, the child outlives its parent and lands here.
    """
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == launcher.pid:
            launcher.returncode = os.waitstatus_to_exitcode(status)
            return launcher.returncode


def find_java(launcher: psutil.Process) -> psutil.Process | None:
    try:
        for child in launcher.children():
            if "com.amazonaws.ml.mms.ModelServer" in child.cmdline():
                return child
    except psutil.NoSuchProcess:
        pass
    return None


# A Unix socket's path holds at most 107 bytes (sun_path); MMS names its worker sockets inside java.io.tmpdir
# (`<dir>/.mms.sock.9000`), so a deep run directory would kill every worker at start ("Backend stream
# closed").
SOCKET_PATH_ROOM = 80


def socket_dir(run_dir: Path) -> Path:
    """Where MMS's worker sockets go: the run directory, or a short folder named after it when that is
    too deep for a socket path."""
    if len(str(run_dir)) <= SOCKET_PATH_ROOM:
        return run_dir
    short = Path(tempfile.gettempdir()) / f"mce-mms-{hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]}"
    short.mkdir(mode=0o700, exist_ok=True)
    return short


def main() -> int:
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    if not 0 < port < MMS_PORT_LIMIT:
        print(
            f"serve.py: SAGEMAKER_BIND_TO_PORT={port}: MMS 1.1.11 accepts only ports 1..{MMS_PORT_LIMIT - 1}",
            file=sys.stderr,
        )
        return 2
    address = os.environ.get("MCE_BIND_ADDRESS", "0.0.0.0")
    run_dir = Path(os.environ.get("MCE_RUN_DIR", "/tmp/mms")).resolve()
    launcher_path = shutil.which("multi-model-server") or str(
        Path(sys.executable).with_name("multi-model-server")
    )
    if not Path(launcher_path).exists():
        print(
            "serve.py: the multi-model-server command is missing; pip install multi-model-server==1.1.11",
            file=sys.stderr,
        )
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ".model_server.pid").unlink(missing_ok=True)  # else the launcher refuses a stale PID
    log_level = os.environ.get("MCE_LOG_LEVEL", "warn").lower()
    config = write_config(run_dir, address, port, log_level)
    become_subreaper()
    python_path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = {
        **os.environ,
        "PYTHONPATH": python_path,  # the workers import model_handler from here
        "TMPDIR": str(run_dir),  # the launcher's pid file: one per run directory, not one per machine
        "TEMP": str(socket_dir(run_dir)),  # java.io.tmpdir, where MMS puts its worker sockets
        "LOG_LOCATION": str(run_dir),
        "METRICS_LOCATION": str(run_dir),
    }
    launcher = subprocess.Popen(
        [
            launcher_path,
            "--foreground",
            "--mms-config",
            str(config),
            "--model-store",
            "/",
            "--log-config",
            str(run_dir / "log4j2.xml"),
        ],
        env=env,
        cwd=run_dir,
    )
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        java = find_java(psutil.Process(launcher.pid)) if launcher.poll() is None else None
        if java is not None:
            java.terminate()
        elif launcher.poll() is None:
            launcher.terminate()  # java not started yet; an orphaned java is ours and stopped below

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = wait_for(launcher)
    # java has exited (on a signal or on its own); its workers have not: stop them and the launcher's
    # leftovers.
    stop_descendants(WORKER_GRACE)
    if stopping.is_set():
        return 0
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
