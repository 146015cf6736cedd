"""The web page in a real headless Chromium: what it highlights is exactly what each model predicts.

Needs Debian's ``chromium`` and ``chromium-driver`` (the Makefile's test target installs them).
The network is closed, so Chromium runs with every background connection switched off.
"""
from __future__ import annotations

import shutil

import pytest
from conftest import OVERFIT
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from test_serve import crf_runs, running_server  # noqa: F401  (crf_runs is a fixture)

from kner.data import load_split
from kner.serve import create_app, load_models

pytestmark = pytest.mark.slow  # trains neural models or starts servers: `pytest -m "not slow"` skips them

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("needs Chromium and its driver: apt-get install -y chromium chromium-driver (make test does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, crf_runs):  # noqa: F811
    """The page served for both CRF models; yields (driver, loaded models)."""
    models = load_models(crf_runs)
    with running_server(create_app(models)) as url:
        browser.get(url)
        wait_for_state(browser, "ready")
        yield browser, models


def wait_for_state(driver, state):
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.state") == state)


def tag(driver, lines):
    """Type ``lines`` into the page, press the button and wait for the answer."""
    box = driver.find_element(By.ID, "input")
    box.clear()
    box.send_keys("\n".join(lines))
    driver.execute_script("document.body.dataset.state = 'waiting'")
    driver.find_element(By.ID, "run").click()
    wait_for_state(driver, "done")


def shown(driver, model_name):
    """Per paragraph in the model's column: the highlighted (surface, label) pairs and the paragraph's text."""
    return driver.execute_script("""
        const col = [...document.querySelectorAll('section.model')].find(s => s.dataset.model === arguments[0]);
        return [...col.querySelectorAll('p.highlighted')].map(p => ({
            marks: [...p.querySelectorAll('mark.ent')].map(m => [m.querySelector('.surface').textContent, m.dataset.label]),
            text: [...p.childNodes].map(n => n.nodeType === 3 ? n.textContent : n.querySelector('.surface').textContent).join(''),
        }));""", model_name)


def test_each_model_column_highlights_exactly_its_predictions(page, klue_dir):
    driver, models = page
    lines = [ex.text for ex in load_split("dev", klue_dir, limit=6)] + [OVERFIT[3].text]
    tag(driver, lines)
    columns = driver.execute_script("return [...document.querySelectorAll('section.model')].map(s => s.dataset.model)")
    assert columns == [m.name for m in models]
    for model in models:
        want = [[[text[s.start:s.end], s.label] for s in spans] for text, spans in zip(lines, model.tagger.predict(lines))]
        assert any(want), f"{model.name} should find entities in the test sentences"
        got = shown(driver, model.name)
        assert [p["marks"] for p in got] == want
        assert [p["text"] for p in got] == lines


def test_page_shows_a_legend_latency_per_model_and_a_json_link(page):
    driver, models = page
    tag(driver, [OVERFIT[0].text])
    legend = [s.get_attribute("data-label") for s in driver.find_elements(By.CSS_SELECTOR, "#legend .swatch")]
    assert legend == list(models[0].tagger.labels)
    latencies = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "section.model .latency")]
    assert len(latencies) == len(models) and all(t.endswith(" ms") for t in latencies)
    link = driver.find_element(By.ID, "json-link")
    assert link.is_displayed() and "/predict?text=" in link.get_attribute("href")


def test_markup_typed_by_the_user_is_shown_as_text_not_run(page):
    driver, models = page
    attack = '이순신 <img src=x onerror="document.title=\'pwned\'"><b>굵게</b> 서울'
    tag(driver, [attack])
    assert driver.find_elements(By.CSS_SELECTOR, "#results img, #results b") == []
    assert driver.title != "pwned"
    assert [p["text"] for p in shown(driver, models[0].name)] == [attack]


def test_a_server_refusal_is_shown_to_the_user(page):
    driver, _ = page
    box = driver.find_element(By.ID, "input")
    box.clear()
    driver.execute_script("arguments[0].value = arguments[1]", box, "\n".join(["가나다"] * 70))  # over --max-batch 64
    driver.find_element(By.ID, "run").click()
    error = driver.find_element(By.ID, "error")
    WebDriverWait(driver, 20).until(lambda d: error.is_displayed())
    assert "413" in error.text and "limit of 64" in error.text
