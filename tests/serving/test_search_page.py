"""A real `python serve.py` process (the offline demo) on a free loopback port: the search page
in headless Chromium, graceful shutdown on SIGTERM, and a restart that reloads from disk.

Chromium: Debian `chromium` + `chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver) with
the `selenium` package; the browser test skips when either is missing.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.local_servers import free_port, spawn_serve, wait_until_healthy

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A lone request waits this long for companions before its batch runs: a deterministic window
# in which the request is in flight, for the shutdown test.
SLOW_WAIT_MS = 2500


def start_server(cache: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # One CPU device, as a plain deployment has: fewer programs to compile at warm-up
    # (sharding over many devices is tested in-process by tests/serving/test_app.py).
    args = ["--port", port, "--max-batch", "2", "--max-k", "10", *extra]
    process = spawn_serve(args, devices=1, env={"LATEINT_CACHE": str(cache)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, [process])
    except AssertionError:
        process.kill()
        raise
    return process, url


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.stdout.read()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lateint-cache")


@pytest.fixture(scope="module")
def server(cache):
    process, url = start_server(cache, "--max-wait-ms", str(SLOW_WAIT_MS))
    yield process, url
    stop(process)


def test_search_page_in_headless_chromium(server):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            "needs Debian chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="needs selenium (pip install selenium)"
    )
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager fetch a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        driver.get(server[1] + "/")
        box = driver.find_element(By.ID, "q")
        box.send_keys("how do bees find flowers")
        driver.find_element(By.ID, "go").click()
        wait = WebDriverWait(driver, 60)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#results .result")))
        results = driver.find_elements(By.CSS_SELECTOR, "#results .result")
        assert len(results) == 10
        first = results[0]
        assert "Honeybees" in first.find_element(By.CLASS_NAME, "title").text
        assert "score" in first.find_element(By.CLASS_NAME, "score").text
        assert "results in" in driver.find_element(By.ID, "status").text
        # Explanations are fetched only when asked for.
        assert not driver.find_elements(By.TAG_NAME, "mark")
        first.find_element(By.CSS_SELECTOR, ".why summary").click()
        wait.until(lambda _: first.find_elements(By.TAG_NAME, "mark"))
        marks = first.find_elements(By.TAG_NAME, "mark")
        words = [m.text.lower() for m in marks]
        assert "flowers" in words and "honeybees" in words, words  # whole words, not "##bees"
        assert all(w and "[" not in w and not w.startswith("#") for w in words), words
        strengths = {float(m.get_attribute("data-similarity")) for m in marks}
        assert len(strengths) > 1  # shades differ with the match strength
        snippet = first.find_element(By.CLASS_NAME, "text").text
        assert len(snippet) <= 320, snippet  # a snippet around the matches, not the abstract
        matches = first.find_element(By.CLASS_NAME, "matches").text
        assert "flowers \u2192 flowers" in matches and "[" not in matches, matches
        # The API docs render offline: Swagger UI's assets come from the installed package.
        driver.get(server[1] + "/docs")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".swagger-ui .opblock")))
        assert "/search" in driver.find_element(By.CSS_SELECTOR, ".swagger-ui").text
    finally:
        driver.quit()


def test_sigterm_lets_the_in_flight_request_finish_and_restart_reloads(cache, server):
    process, url = server
    query = {"query": "how do bees find flowers", "k": 5}
    outcome = {}

    def slow_request():
        outcome["response"] = httpx.post(f"{url}/search", json=query, timeout=60)

    client = threading.Thread(target=slow_request)
    client.start()
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/stats", timeout=5).json()["in_flight"] < 2:  # /stats itself is one
        assert time.monotonic() < deadline, "the request never arrived"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    client.join(60)
    log = stop(process)
    assert process.returncode == 0, log
    assert "Application shutdown complete" in log
    response = outcome["response"]
    assert response.status_code == 200, response.text
    before = [(h["id"], round(h["score"], 4)) for h in response.json()["results"]]
    assert len(before) == 5 and before[0][0] == "demo-042"  # Honeybees
    assert "building the demo index" in log
    assert "warm-up" in log and "programs compiled" in log  # warm-up shows its progress

    restarted, url = start_server(cache)
    try:
        after = httpx.post(f"{url}/search", json=query, timeout=60).json()["results"]
        assert [(h["id"], round(h["score"], 4)) for h in after] == before
    finally:
        log = stop(restarted)
    assert "building the demo index" not in log  # reloaded from disk, not rebuilt


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--index", "/nonexistent-index"], "index folder /nonexistent-index does not exist"),
        (["--max-batch", "0"], "--max-batch must be >= 1"),
        (["--index", "x", "--num-processes", "2"], "needs --coordinator"),
    ],
)
def test_bad_flags_fail_with_one_line(flags, message):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "serve.py"), *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [f"serve.py: error: {errors[0].split('error: ', 1)[1]}"]
    assert message in errors[0] and "Traceback" not in done.stderr
