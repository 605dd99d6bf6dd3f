"""The search page (/ui/) in Debian's headless Chromium: a pasted key, a collection and a mode, the
hits with their titles and marked words, the API's own error for a bad key, and a CSP that lets the
page load nothing but its own files."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.api.conftest import Api
from tests.api.test_endpoints import wait_final
from tests.support.chromium import headless_chromium

RECORDS = [
    {"id": "tides", "text": "Spring tides come twice a month, at the new and the full moon.", "metadata": {"title": "Tide tables"}},
    {"id": "wick", "text": "The keeper trims the wick every four hours through the night.", "metadata": {"title": "Keeper's duties"}},
    {"id": "fog", "text": "In fog the horn sounds two blasts every minute.", "metadata": {"title": "Fog signals"}},
]


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with headless_chromium() as driver:
        yield driver


def _indexed(api: Api) -> str:
    collection = f"page_{uuid.uuid4().hex[:10]}"
    workflow = {"workflow_id": "page", "steps": [
        {"step_id": "index", "type": "index", "parameters": {"collection": collection, "source": RECORDS}}]}
    with api.client(headers=api.headers()) as client:
        submitted = client.post("/api/v1/orchestration/workflow", json=workflow).json()
    assert wait_final(api, submitted["task_id"])["status"] == "Completed"
    return collection


def _use_key(browser: webdriver.Chrome, api: Api, key: str) -> None:
    browser.get(f"{api.url}/ui/")
    field = browser.find_element(By.ID, "key")
    field.clear()
    field.send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()


def test_a_search_shows_its_hits_titles_and_marked_words(browser: webdriver.Chrome, embedded_api: Api) -> None:
    api = embedded_api
    collection = _indexed(api)
    _use_key(browser, api, api.keys["reader"])
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: any(o.get_attribute("value") == collection for o in Select(b.find_element(By.ID, "collection")).options))
    Select(browser.find_element(By.ID, "collection")).select_by_value(collection)
    assert Select(browser.find_element(By.ID, "mode")).first_selected_option.text == "hybrid"
    browser.find_element(By.ID, "query").send_keys("when do spring tides come")
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "status"), "hybrid search"))
    first = browser.find_elements(By.CSS_SELECTOR, "#results li")[0]
    assert first.find_element(By.CLASS_NAME, "title").text == "Tide tables"
    assert {mark.text.lower() for mark in first.find_elements(By.TAG_NAME, "mark")} >= {"spring", "tides"}
    assert " ms in the API" in browser.find_element(By.ID, "status").text
    Select(browser.find_element(By.ID, "mode")).select_by_value("sparse")
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "status"), "sparse search"))
    assert [li.find_element(By.CLASS_NAME, "title").text for li in browser.find_elements(By.CSS_SELECTOR, "#results li")] == ["Tide tables"]
    problems = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not problems, problems  # no CSP violation, no failed load


def test_a_bad_key_shows_the_apis_error(browser: webdriver.Chrome, embedded_api: Api) -> None:
    _use_key(browser, embedded_api, "ctd_nope_nope")
    WebDriverWait(browser, 30).until(lambda b: "error" in (b.find_element(By.ID, "status").get_attribute("class") or ""))
    with embedded_api.client(headers={"X-API-Key": "ctd_nope_nope"}) as client:
        refused = client.get("/api/v1/search/collections")
    assert refused.status_code == 401
    assert browser.find_element(By.ID, "status").text == refused.json()["error"]["message"]


def test_the_page_is_served_under_a_strict_csp(embedded_api: Api) -> None:
    with embedded_api.client() as client:
        page = client.get("/ui/")
        script = client.get("/ui/search.js")
        moved = client.get("/ui", follow_redirects=False)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers.get_list("content-security-policy") == [csp]  # one policy, not the API's too
    assert "http" not in page.text.replace(embedded_api.url, "")  # nothing loaded from elsewhere
    assert script.headers["content-type"].startswith("text/javascript") and moved.status_code == 308
