"""The playground page at ``/`` in headless Chromium (Playwright's sync API), against a live gateway
whose backends are the scripted OpenAI-compatible server.

Debian's ``chromium`` is driven (Playwright's own browser download fails here); CI installs it in
``.ci/run``. A screenshot of the finished blend goes to ``build/playground.png`` and to ``tmp_path``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serve_helpers import scripted_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # without these Chromium floods a closed network with refused connections
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BUILD = Path(__file__).resolve().parents[2] / "build"

LONG = "Copper conducts electricity, resists corrosion and is easy to shape into wire."
SHORT = "Wiring."
PROMPT = "Name uses of copper."

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"the page raised JavaScript errors: {errors}"


def test_a_blend_shows_candidates_ranks_and_the_answer(
    scripted_server, live_gateway, page, tmp_path: Path
) -> None:
    scripted_server.script_for("alpha", [("say", SHORT)])
    scripted_server.script_for("beta", [500])
    scripted_server.script_for("gamma", [("say", LONG)])
    live = live_gateway(scripted_config(scripted_server, names=("alpha", "beta", "gamma")))

    page.goto(live.base_url + "/")
    page.wait_for_selector("#model[data-loaded=true]", state="attached")
    options = page.eval_on_selector_all("#model option", "nodes => nodes.map(n => n.value)")
    assert options[0] == "blend" and {"rank", "alpha", "beta", "gamma"} <= set(options)
    assert page.input_value("#model") == "blend"

    page.fill("#prompt", PROMPT)
    page.click("#send")
    page.wait_for_selector("#status[data-state=done]")

    assert page.text_content("#answer") == LONG  # the longest ranker's top candidate
    gamma = page.locator('.candidate[data-model="gamma"]')
    alpha = page.locator('.candidate[data-model="alpha"]')
    beta = page.locator('.candidate[data-model="beta"]')
    assert gamma.get_attribute("data-rank") == "1" and "top" in gamma.get_attribute("class")
    assert alpha.get_attribute("data-rank") == "2" and "top" not in alpha.get_attribute("class")
    assert gamma.locator(".text").text_content() == LONG
    assert alpha.locator(".text").text_content() == SHORT
    assert float(gamma.get_attribute("data-score")) > float(alpha.get_attribute("data-score"))
    assert gamma.locator(".score").text_content().startswith("score ")
    assert gamma.locator(".rank").text_content() == "rank 1"
    assert alpha.locator(".rank").text_content() == "rank 2"

    assert beta.get_attribute("data-state") == "error"
    assert beta.get_attribute("data-rank") is None
    assert beta.locator(".error").is_visible() and "500" in beta.locator(".error").text_content()
    assert page.locator(".candidate .error:visible").count() == 1

    order = page.eval_on_selector_all(".candidate", "nodes => nodes.map(n => n.dataset.model)")
    assert order == ["gamma", "alpha", "beta"]  # by rank, the failed one last
    assert page.text_content("#returned") == "top"
    timings = page.text_content("#timings")
    for stage in ("generate", "rank", "fuse", "guard", "total"):
        assert stage in timings
    assert page.locator("#error").is_hidden()
    (sent,) = scripted_server.requests_for("gamma")
    assert sent.body["messages"] == [{"role": "user", "content": PROMPT}]

    BUILD.mkdir(exist_ok=True)
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
    shutil.copyfile(tmp_path / "playground.png", BUILD / "playground.png")


def test_a_wrong_api_key_shows_the_401_message(scripted_server, live_gateway, page, tmp_path: Path) -> None:
    live = live_gateway(scripted_config(scripted_server), api_keys=("k1",))
    page.goto(live.base_url + "/")
    page.wait_for_selector("#error:visible")  # listing the models without a key is refused too
    assert "401" in page.text_content("#error")

    page.fill("#api-key", "wrong")
    page.fill("#prompt", "ping")
    page.press("#prompt", "Control+Enter")
    page.wait_for_selector("#status[data-state=error]")
    message = page.text_content("#error")
    assert "401" in message and "API key" in message
    assert page.text_content("#answer") == ""
    page.screenshot(path=str(tmp_path / "playground-401.png"), full_page=True)

    page.fill("#api-key", "k1")
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#model[data-loaded=true]", state="attached")
    page.click("#send")
    page.wait_for_selector("#status[data-state=done]")
    assert page.locator("#error").is_hidden()
    assert page.text_content("#answer") == "echo: ping"


def test_a_backend_name_streams_its_answer_without_candidates(scripted_server, live_gateway, page) -> None:
    live = live_gateway(scripted_config(scripted_server))
    page.goto(live.base_url + "/")
    page.wait_for_selector("#model[data-loaded=true]", state="attached")
    page.select_option("#model", "beta")
    page.fill("#prompt", "one two three")
    page.click("#send")
    page.wait_for_selector("#status[data-state=done]")
    assert page.text_content("#answer") == "echo: one two three"
    assert page.locator(".candidate").count() == 0
    assert page.text_content("#returned") == "proxied backend: beta"
    assert [r.body["model"] for r in scripted_server.requests] == ["beta"]
