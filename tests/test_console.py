"""The local SageMaker's console (gateway/console) in a real browser: Debian's chromium, headless, driven by
selenium through chromium-driver. Endpoints are created with boto3; the page must show them as the API
describes them, with the containers' rates, latency and last lines, and only to mce's own origin."""

from __future__ import annotations

import http.client
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from test_local_sagemaker import LocalSageMaker, deploy, in_service, settled

WAIT = 30.0  # s for the page to show what the API already says (it refreshes every 3 s)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("chromium and chromium-driver are not installed: bash .ci/setup installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1200,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(options=options, service=Service(driver))
    yield session
    session.quit()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSageMaker]:
    """mce up with an endpoint in service (good) and one that failed (broken), made with boto3."""
    server = LocalSageMaker(tmp_path_factory.mktemp("console"))
    sm = server.sagemaker()
    deploy(sm, "good", ("AllTraffic", "test/echo:1", 1.0))
    deploy(sm, "broken", ("AllTraffic", "test/broken:1", 1.0))
    in_service(sm, "good")
    assert settled(sm, "broken")["EndpointStatus"] == "Failed"
    sm.close()
    yield server
    try:
        server.stop()
    finally:
        server.proc.kill()


def section(browser: WebDriver, name: str) -> Any:
    """The page's section for endpoint `name`, once it shows one."""
    found = WebDriverWait(browser, WAIT).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, f'section[data-endpoint="{name}"] [data-status]')
    )
    return found[0].find_element(By.XPATH, "ancestor::section")


def test_the_console_shows_each_endpoint_as_the_api_describes_it(
    local: LocalSageMaker, browser: WebDriver
) -> None:
    browser.get(local.url + "/")
    good, broken = section(browser, "good"), section(browser, "broken")
    assert good.find_element(By.CSS_SELECTOR, "[data-status]").text == "InService"
    assert broken.find_element(By.CSS_SELECTOR, "[data-status]").text == "Failed"
    reason = broken.find_element(By.CSS_SELECTOR, "[data-reason]").text
    sm = local.sagemaker()
    assert reason == sm.describe_endpoint(EndpointName="broken")["FailureReason"]
    sm.close()
    assert "cannot find /opt/ml/model/weights.bin" in reason
    row = good.find_element(By.CSS_SELECTOR, "tr[data-container]")
    assert row.find_element(By.CSS_SELECTOR, "[data-state]").text.startswith("ready")
    assert "AllTraffic" in good.text and "1.00" in good.text  # the variant and its weight
    # offline: every resource the page loaded came from mce itself
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(local.url + "/") for url in loaded), loaded
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[attr-defined]


def test_the_console_shows_rates_latency_and_last_lines_while_traffic_runs(
    local: LocalSageMaker, browser: WebDriver
) -> None:
    runtime = local.runtime()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            runtime.invoke_endpoint(EndpointName="good", Body=b'{"x": 1}', ContentType="application/json")

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        browser.get(local.url + "/")

        def busy(b: WebDriver) -> bool:
            cells = b.find_elements(By.CSS_SELECTOR, 'section[data-endpoint="good"] tr[data-container] td')
            charted = b.find_elements(By.CSS_SELECTOR, 'section[data-endpoint="good"] svg.chart polyline')
            return (
                len(cells) >= 6
                and cells[3].text not in ("-", "0.0")
                and cells[5].text != "-"
                and bool(charted)
            )

        WebDriverWait(browser, WAIT).until(busy)
    finally:
        stop.set()
        sender.join()
        runtime.close()  # its pooled connection to mce, closed now rather than when collected
    good = section(browser, "good")
    good.find_element(By.CSS_SELECTOR, "details summary").click()
    assert "echo listening on" in good.find_element(By.CSS_SELECTOR, "pre.lines").text


def get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_the_console_is_only_for_mces_own_origin_and_never_framed(local: LocalSageMaker) -> None:
    status, headers, body = get(local.url, "/")
    assert status == 200 and b"<title>mce: local SageMaker</title>" in body
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    for foreign in ({"Host": "evil.example:80"}, {"Origin": "http://evil.example"}):
        status, _, body = get(local.url, "/", foreign)
        assert status == 403 and b"<html" not in body, (foreign, body)
    status, _, body = get(local.url, "/console/containers?endpoint=../../etc")
    assert status == 400 and b"takes ?endpoint=<EndpointName>" in body
    status, _, body = get(local.url, "/console/containers?endpoint=nobody")
    assert status == 400 and b"Could not find endpoint nobody" in body


def test_the_console_is_off_under_access(tmp_path: Path) -> None:
    access = tmp_path / "access.yaml"
    access.write_text(
        yaml.safe_dump(
            {
                "Keys": [
                    {
                        "AccessKeyId": "AKIDTEST",
                        "SecretAccessKey": "secret",
                        "Name": "ci",
                        "Policy": {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]},
                    }
                ],
            }
        )
    )
    server = LocalSageMaker(tmp_path, None, None, "--access", str(access))
    try:
        status, _, body = get(server.url, "/")
        assert status == 404 and b"The console is off under --access" in body, body
    finally:
        server.stop()
        server.proc.kill()
