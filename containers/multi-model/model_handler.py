"""Multi Model Server custom service for the digits models: rows of 64 pixel values in, class probabilities
out.

MMS imports this module in each model's worker process and calls the module-level `handle(data, context)`:
once with `data=None` when the model loads (SageMaker's `POST /models`), then once per batch of requests
(`POST /models/{name}/invoke`). One worker serves one model, so the module holds one `ModelHandler`.

Requests: `application/json` (a bare 2-D list, or `{"inputs": rows}` / `{"instances": rows}`), `text/csv`
(one row per line, sagemaker_inference's decoder) or `application/x-npy` (read without pickle). Every row
must hold 64 finite numbers (pixel values 0..16; the range is not enforced, the model scales by 1/16). Answer
(JSON only): `{"predictions": [[10 probabilities], ...], "labels": [class, ...], "model": <meta name>}`.

A payload we cannot use is the caller's error: the handler sets that request's status to 400 through
`context.set_response_status` (MMS 1.1.11 `mms/context.py`; the Java frontend sends it as the HTTP status)
and answers MMS's own error shape `{"code": 400, "type": "ValidationError", "message": "..."}`, one line,
no traceback. Anything else raised from `handle` becomes MMS's 503 "Prediction failed".

Memory budget: when `MODEL_SERVER_MAX_MODELS=N` is set, loading fails with `MemoryError` while N other
model workers of the same server are alive. MMS turns a `MemoryError` during load into 507 ("System out
of memory"), which is what SageMaker expects from a container that has no room (spec section 4.1). MMS
gives each worker its own processes (`mms/model_service_worker.py` listens, then forks one child per
frontend connection that loads the model), so a sibling is a child of the Java frontend running
`model_service_worker` other than our own process or its parent. An unload may still be finishing when
the retried load arrives, so at capacity we poll for a few seconds before refusing. MMS 1.1.11 quirk
(measured): after that 507 the name stays registered with no worker (`GET` 200 with `"workers": []`, a
repeated load 409, invoke 503), so a caller must `DELETE /models/{name}` until it answers 200 (a DELETE
racing MMS's own failed cleanup can get 404 while the ghost comes back) before loading it again.

Logging: the worker logs through MMS's root handler (a StreamHandler on stdout), and after a load its stdout
and stderr are FIFOs the Java frontend reads. On an unload the frontend closes the worker's socket, then
stops reading both FIFOs and closes them (MMS 1.1.11 `WorkerThread.shutdown`). The worker sees the socket
close and logs "Frontend disconnected." (`mms/protocol/otf_message_handler.py`) and "Backend worker process
died." with its traceback (`mms/model_service_worker.py`): that write fails with BrokenPipeError, and
logging's `Handler.handleError` prints "--- Logging error ---" and the traceback to stderr, of which the
frontend's stderr reader, told to stop, logs only the line it was already waiting for: the container log
showed a bare "--- Logging error ---" at WARN. `quiet_closed_log_pipes` (at load) gives the root logger's
stream handlers a `handleError` that, on a broken pipe, points that stream's file descriptor at /dev/null
(nobody reads it any more; MMS's own later flushes then succeed) and drops the record; any other logging
error is reported in full as before.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from sagemaker_inference import decoder, encoder, errors

FEATURES = 64
CLASSES = 10
CAPACITY_WAIT = 3.0  # seconds to wait for an unloading sibling to exit
CAPACITY_POLL = 0.1
WORKER_MODULE = "model_service_worker"
JSON = "application/json"
DECODABLE = ("application/json", "text/csv", "application/x-npy")


class ModelLoadError(RuntimeError):
    """The model directory does not hold a usable model.npz / meta.json."""


class PayloadError(ValueError):
    """The request body is not rows of 64 finite numbers in a supported content type."""


@dataclass(frozen=True, slots=True)
class Layers:
    """The loaded weights: input scale, then (weights, bias) per dense layer; ReLU between, softmax after."""

    scale: float
    dense: tuple[tuple[np.ndarray, np.ndarray], ...]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        hidden = rows * self.scale
        for index, (weights, bias) in enumerate(self.dense):
            hidden = hidden @ weights + bias
            if index < len(self.dense) - 1:
                hidden = np.maximum(hidden, 0.0)
        hidden = hidden - hidden.max(axis=1, keepdims=True)
        exp = np.exp(hidden)
        probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return probabilities


def load_layers(model_dir: Path) -> Layers:
    """Read model.npz without pickle; a missing or malformed file raises ModelLoadError.

    MemoryError is deliberately not caught: MMS must see it to answer 507.
    """
    path = model_dir / "model.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise ModelLoadError(
            f"{path} does not exist: the artifact must hold model.npz at its top level"
        ) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelLoadError(f"{path} is not a readable numpy .npz file: {exc}") from exc
    count = len([key for key in arrays if key.startswith("W")])
    try:
        dense = tuple(
            (arrays[f"W{i}"].astype(np.float64), arrays[f"b{i}"].astype(np.float64)) for i in range(count)
        )
        scale = float(arrays["scale"].reshape(()))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path} lacks the arrays scale, W0, b0, ...: {exc}") from exc
    width = FEATURES
    for index, (weights, bias) in enumerate(dense):
        if weights.ndim != 2 or weights.shape[0] != width or bias.shape != (weights.shape[1],):
            raise ModelLoadError(f"{path}: layer {index} has shapes {weights.shape} and {bias.shape}")
        width = weights.shape[1]
    if not dense or width != CLASSES:
        raise ModelLoadError(f"{path}: expected dense layers from {FEATURES} inputs to {CLASSES} classes")
    return Layers(scale, dense)


def load_meta(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(
            f"{path} does not exist: the artifact must hold meta.json at its top level"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise ModelLoadError(f"{path} must be a JSON object with a string 'name'")
    return meta


def sibling_workers() -> list[psutil.Process]:
    """Model workers of our MMS server other than ours: the frontend's children running
    model_service_worker."""
    me = psutil.Process()
    ours = {me.pid}
    ancestor = me.parent()
    frontend = None
    while ancestor is not None:  # climb to the Java frontend; our own worker process is on the way
        if WORKER_MODULE in " ".join(_cmdline(ancestor)):
            ours.add(ancestor.pid)
            ancestor = ancestor.parent()
            continue
        frontend = ancestor
        break
    if frontend is None:
        return []
    siblings = []
    for child in frontend.children():
        if child.pid in ours or WORKER_MODULE not in " ".join(_cmdline(child)):
            continue
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                siblings.append(child)
        except psutil.NoSuchProcess:
            continue
    return siblings


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        argv: list[str] = process.cmdline()
        return argv
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


class WorkerLogHandler(logging.StreamHandler[Any]):
    """A StreamHandler that goes quiet once its stream's reader has gone (the frontend unloading the
    model)."""

    def handleError(self, record: logging.LogRecord) -> None:
        if not isinstance(sys.exc_info()[1], BrokenPipeError):
            super().handleError(record)  # a real logging error: "--- Logging error ---" and the traceback
            return
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, AttributeError, ValueError):
            pass  # not a file descriptor: the record is dropped all the same


def quiet_closed_log_pipes() -> None:
    """Make the root logger's plain stream handlers (MMS's basicConfig on stdout) WorkerLogHandlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is not logging.StreamHandler:
            continue
        quiet = WorkerLogHandler(handler.stream)
        quiet.setLevel(handler.level)
        quiet.setFormatter(handler.formatter)
        for log_filter in handler.filters:
            quiet.addFilter(log_filter)
        root.addHandler(quiet)
        root.removeHandler(handler)


def check_capacity(limit: int) -> None:
    """Raise MemoryError if `limit` other models stay loaded for CAPACITY_WAIT seconds."""
    deadline = time.monotonic() + CAPACITY_WAIT
    while True:
        loaded = len(sibling_workers())
        if loaded < limit:
            return
        if time.monotonic() >= deadline:
            raise MemoryError(f"MODEL_SERVER_MAX_MODELS={limit}: {loaded} models already loaded")
        time.sleep(CAPACITY_POLL)


def decode_rows(body: bytes, content_type: str) -> np.ndarray:
    """Turn a request body into a float array of shape (rows, 64), or raise PayloadError."""
    media = content_type.split(";", 1)[0].strip().lower() or JSON
    if media not in DECODABLE:
        raise PayloadError(f"unsupported Content-Type {media!r}; use one of {', '.join(DECODABLE)}")
    if media == JSON:
        # sagemaker_inference's JSON decoder is np.array(json.loads(body)), which turns an object into a
        # 0-d object array; unwrap the two envelopes ourselves.
        try:
            payload = json.loads(body)
        except ValueError:
            raise PayloadError("the body is not valid JSON") from None
        if isinstance(payload, dict):
            keys = [key for key in ("inputs", "instances") if key in payload]
            if len(keys) != 1:
                raise PayloadError(
                    'expected a list of rows, or an object with exactly one of "inputs", "instances"'
                )
            payload = payload[keys[0]]
        rows = _as_array(payload)
    elif media == "application/x-npy":
        # Not decoder.decode: sagemaker_inference 1.10.1 loads .npy with allow_pickle=True, which would let a
        # client run code in the worker with a crafted object array.
        try:
            rows = _as_array(np.load(io.BytesIO(body), allow_pickle=False))
        except (ValueError, OSError, EOFError) as exc:
            raise PayloadError(f"cannot decode the .npy body: {_one_line(exc)}") from None
    else:
        try:
            decoded = decoder.decode(body.decode("utf-8"), media)
        except (ValueError, UnicodeDecodeError, errors.UnsupportedFormatError) as exc:
            raise PayloadError(f"cannot decode the {media} body: {_one_line(exc)}") from None
        rows = _as_array(decoded)
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)  # genfromtxt gives a single line as 1-D
    if rows.ndim != 2 or rows.shape[1] != FEATURES or rows.shape[0] == 0:
        raise PayloadError(
            f"expected a non-empty 2-D array of rows with {FEATURES} numbers, got shape {rows.shape}"
        )
    if not np.isfinite(rows).all():
        raise PayloadError("every value must be a finite number (no NaN, Infinity or empty CSV fields)")
    return rows


def _as_array(payload: Any) -> np.ndarray:
    try:
        array = np.asarray(payload)
    except ValueError:
        raise PayloadError(f"rows must all hold {FEATURES} numbers") from None
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.number)):
        raise PayloadError(f"expected rows of {FEATURES} numbers, got values of type {array.dtype}")
    return array.astype(np.float64, copy=False)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _header(context: Any, index: int, name: str) -> str:
    """A request header, case-insensitively (MMS passes header names as the client sent them)."""
    headers = context.get_all_request_header(index) or {}
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name and isinstance(value, str):
            return value
    return ""


class ModelHandler:
    """One model in one worker process: loaded by `initialize`, used by `handle`."""

    def __init__(self) -> None:
        self.layers: Layers | None = None
        self.name = ""

    def initialize(self, context: Any) -> None:
        quiet_closed_log_pipes()
        limit = os.environ.get("MODEL_SERVER_MAX_MODELS", "").strip()
        if limit:
            check_capacity(int(limit))
        model_dir = Path(context.system_properties["model_dir"])
        meta = load_meta(model_dir)
        self.layers = load_layers(model_dir)
        self.name = meta["name"]

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes]:
        return [self.answer(index, request, context) for index, request in enumerate(data)]

    def answer(self, index: int, request: dict[str, Any], context: Any) -> bytes:
        assert self.layers is not None, "handle() before initialize()"
        context.set_response_content_type(index, JSON)
        body = request.get("body", request.get("data", b""))
        if isinstance(body, str):
            body = body.encode("utf-8")
        try:
            accept = _header(context, index, "accept").split(";", 1)[0].strip().lower()
            if accept not in ("", "*/*", JSON):
                raise PayloadError(f"unsupported Accept {accept!r}; this model answers {JSON}")
            rows = decode_rows(bytes(body or b""), _header(context, index, "content-type"))
        except PayloadError as exc:
            context.set_response_status(400, "Bad Request", index)
            return json.dumps({"code": 400, "type": "ValidationError", "message": str(exc)}).encode()
        probabilities = self.layers.predict(rows)
        answer = {
            "predictions": probabilities,
            "labels": probabilities.argmax(axis=1),
            "model": self.name,
        }
        encoded: str = encoder.encode(answer, JSON)
        return encoded.encode()


_service = ModelHandler()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """MMS entry point: `data is None` means load the model (MMS's MmsModelLoader calls it so)."""
    if data is None:
        _service.initialize(context)
        return None
    return _service.handle(data, context)
