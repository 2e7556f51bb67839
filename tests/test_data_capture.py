"""Data capture (DataCaptureConfig) through an unmodified boto3: requests and answers sampled into a local S3
server (moto's server mode) in SageMaker's format, read back by a reader written from AWS's documented
format (docs/data-capture.md), never from our writer."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import metric, wait_until
from test_local_sagemaker import ROLE, LocalSageMaker

# <DestinationS3Uri>/<EndpointName>/<VariantName>/yyyy/mm/dd/hh/<mm-ss-fff>-<uuid>.jsonl
KEY = re.compile(
    r"(?P<prefix>.+)/(?P<endpoint>[^/]+)/(?P<variant>[^/]+)/\d{4}/\d{2}/\d{2}/\d{2}/"
    r"\d{2}-\d{2}-\d{3}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.jsonl"
)
TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
CAPTURE = {
    "EnableCapture": True,
    "InitialSamplingPercentage": 100,
    "DestinationS3Uri": "s3://models/capture",
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]},
}


def side(record: dict[str, Any], mode: str) -> tuple[str | None, bytes]:
    """One side of a captured event: its observed content type and its data, decoded as its encoding says."""
    assert set(record) <= {"observedContentType", "mode", "data", "encoding"}, record
    assert record["mode"] == mode
    encoding = record["encoding"]
    assert encoding in ("CSV", "JSON", "BASE64"), encoding
    data = base64.b64decode(record["data"]) if encoding == "BASE64" else record["data"].encode()
    return record.get("observedContentType"), data


def captured(bucket: Any, endpoint: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event captured for `endpoint` (under s3://models/capture/), with the key of the object it was
    read from."""
    prefix = f"capture/{endpoint}/"  # moto keeps one store per process: other tests' objects are there too
    events = []
    listing = bucket.list_objects_v2(Bucket="models", Prefix=prefix)
    for item in listing.get("Contents", []):
        body = bucket.get_object(Bucket="models", Key=item["Key"])["Body"].read().decode()
        assert body.endswith("\n")
        for line in body.splitlines():
            event = json.loads(line)
            assert set(event) == {"captureData", "eventMetadata", "eventVersion"}, event
            assert event["eventVersion"] == "0"
            metadata = event["eventMetadata"]
            assert set(metadata) <= {"eventId", "inferenceId", "inferenceTime"}, metadata
            assert TIME.fullmatch(metadata["inferenceTime"]), metadata
            events.append((item["Key"], event))
    return events


def endpoint(sm: Any, name: str, image: str = "test/echo:1", capture: dict[str, Any] | None = None) -> None:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": image})
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name}],
        DataCaptureConfig=capture or CAPTURE,
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def test_every_answered_request_is_captured_as_sagemaker_writes_it_and_sigterm_loses_none(
    local_s3: tuple[LocalSageMaker, Any],
) -> None:
    server, bucket = local_s3
    sm, runtime = server.sagemaker(), server.runtime()
    endpoint(sm, "watched")
    described = sm.describe_endpoint(EndpointName="watched")["DataCaptureConfig"]
    assert described == {
        "EnableCapture": True,
        "CaptureStatus": "Started",
        "CurrentSamplingPercentage": 100,
        "DestinationS3Uri": "s3://models/capture",
    }
    sent = [
        ({"ContentType": "application/json", "InferenceId": "first"}, b'{"x": [1, 2]}'),
        ({"ContentType": "text/csv"}, b"1"),  # JSON to the echo container, CSV to the capture
        ({"ContentType": "text/csv; charset=utf-8"}, b"2"),  # listed by its media type
        ({"ContentType": "application/x-npy"}, b'"\\u00e9"'),  # neither listed: base64
    ]
    answers = []
    for extra, body in sent:
        answer = runtime.invoke_endpoint(EndpointName="watched", Body=body, **extra)
        answers.append((answer["ContentType"], answer["Body"].read()))
    with pytest.raises(ClientError):  # a failed invocation is not captured
        runtime.invoke_endpoint(EndpointName="watched", Body=b"not json", ContentType="application/json")
    assert metric(server.url, "mce_capture_events_total", endpoint="watched") == len(sent)
    assert server.stop() == 0  # SIGTERM at once: what is buffered is written before mce exits

    events = captured(bucket, "watched")
    assert len(events) == len(sent)
    by_input = {side(e["captureData"]["endpointInput"], "INPUT")[1]: (k, e) for k, e in events}
    for (extra, body), (answer_type, answer) in zip(sent, answers, strict=True):
        key, event = by_input[body]
        match = KEY.fullmatch(key)
        assert match is not None, key
        assert (match["prefix"], match["endpoint"], match["variant"]) == ("capture", "watched", "AllTraffic")
        data = event["captureData"]
        content_type, _ = side(data["endpointInput"], "INPUT")
        assert content_type == extra["ContentType"]
        media = extra["ContentType"].partition(";")[0]
        expected = {"application/json": "JSON", "text/csv": "CSV"}.get(media, "BASE64")
        assert data["endpointInput"]["encoding"] == expected
        assert side(data["endpointOutput"], "OUTPUT") == (answer_type, answer)
        assert data["endpointOutput"]["encoding"] == "JSON"  # the echo container answers application/json
        assert event["eventMetadata"].get("inferenceId") == extra.get("InferenceId")
    assert len({e["eventMetadata"]["eventId"] for _, e in events}) == len(events)
    firsts: dict[str, str] = {}
    for key, event in events:  # an object is named after its first event's minute and second
        firsts.setdefault(key, event["eventMetadata"]["inferenceTime"])
    for key, first in firsts.items():
        assert key.rsplit("/", 1)[1][:5] == f"{first[14:16]}-{first[17:19]}", (key, first)


def test_the_sample_follows_the_percentage_and_update_endpoint_stops_it(
    local_s3: tuple[LocalSageMaker, Any],
) -> None:
    server, bucket = local_s3
    sm, runtime = server.sagemaker(), server.runtime()
    half = {**CAPTURE, "InitialSamplingPercentage": 50, "CaptureOptions": [{"CaptureMode": "Input"}]}
    del half["CaptureContentTypeHeader"]  # none listed: every body is base64
    endpoint(sm, "sampled", capture=half)
    total = 400
    for i in range(total):
        runtime.invoke_endpoint(EndpointName="sampled", Body=json.dumps(i).encode())
    # written within FLUSH_SECONDS, while mce runs
    wait_until(lambda: len(captured(bucket, "sampled")) > 0, "captured data in S3", timeout=30)

    sm.create_endpoint_config(
        EndpointConfigName="sampled-off",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "sampled"}],
        DataCaptureConfig={**half, "EnableCapture": False},
    )
    sm.update_endpoint(EndpointName="sampled", EndpointConfigName="sampled-off")
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="sampled", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    summary = sm.describe_endpoint(EndpointName="sampled")["DataCaptureConfig"]
    assert (summary["EnableCapture"], summary["CaptureStatus"]) == (False, "Stopped")
    events = captured(
        bucket, "sampled"
    )  # the old variant's last events were written as it stopped, before InService
    # Binomial(400, 0.5): 200 +- 10; six standard deviations either side
    assert 140 <= len(events) <= 260, len(events)
    for _, event in events:
        assert set(event["captureData"]) == {"endpointInput"}  # Input only
        assert event["captureData"]["endpointInput"]["encoding"] == "BASE64"
        assert 0 <= json.loads(side(event["captureData"]["endpointInput"], "INPUT")[1]) < total
    for i in range(20):
        runtime.invoke_endpoint(EndpointName="sampled", Body=json.dumps(i).encode())
    assert server.stop() == 0
    assert len(captured(bucket, "sampled")) == len(events)


def test_what_s3_will_not_take_is_kept_on_disk_and_the_log_says_where(
    local_s3: tuple[LocalSageMaker, Any],
) -> None:
    server, _ = local_s3
    sm, runtime = server.sagemaker(), server.runtime()
    endpoint(sm, "nowhere", capture={**CAPTURE, "DestinationS3Uri": "s3://no-such-bucket/capture"})
    runtime.invoke_endpoint(EndpointName="nowhere", Body=b'{"kept": true}', ContentType="application/json")
    assert server.stop() == 0
    kept = list((server.state / "_capture" / "no-such-bucket").rglob("*.jsonl"))
    assert len(kept) == 1, kept
    assert KEY.fullmatch(str(kept[0].relative_to(server.state / "_capture" / "no-such-bucket")))
    (event,) = [json.loads(line) for line in kept[0].read_text().splitlines()]
    assert side(event["captureData"]["endpointInput"], "INPUT")[1] == b'{"kept": true}'
    assert str(kept[0]) in server.log.read_text()


def test_a_destination_that_cannot_be_written_here_is_refused(local_s3: tuple[LocalSageMaker, Any]) -> None:
    server, _ = local_s3
    sm = server.sagemaker()
    sm.create_model(ModelName="m", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "test/echo:1"})
    with pytest.raises(ClientError) as refused:
        sm.create_endpoint_config(
            EndpointConfigName="https",
            ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "m"}],
            DataCaptureConfig={**CAPTURE, "DestinationS3Uri": "https://bucket.s3.amazonaws.com/capture"},
        )
    error = refused.value.response["Error"]
    assert error["Code"] == "ValidationException" and "s3://bucket/prefix" in error["Message"], error
