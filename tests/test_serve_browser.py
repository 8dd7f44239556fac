"""End to end in a real browser: headless Chromium (Debian's ``chromium``, which .ci/run installs)
driven by Playwright loads the viewer from a real uvicorn server on loopback, translates a sentence
and checks the translation, the heatmap's cells and the highlight on hover."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("fastapi", reason="attnmt serve needs fastapi (pip install -e .)")
httpx = pytest.importorskip("httpx", reason="the serving tests need httpx (pip install -e '.[test]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (pip install -e '.[test]')")

pytest_plugins = ["serve_fixtures"]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SENTENCE = "three seven two"


def chromium_path() -> str:
    """$ATTNMT_CHROMIUM, else Debian's chromium on the PATH; never a browser that Playwright downloads."""
    path = os.environ.get("ATTNMT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not Path(path).exists():
        pytest.skip("no chromium found (apt-get install chromium, or set ATTNMT_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    page.outside_requests = []  # the page must work offline: every asset from attnmt itself
    page.errors = []

    def only_loopback(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            page.outside_requests.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    yield page
    page.close()


def api_translation(url: str, sentence: str, beam: int) -> dict:
    response = httpx.post(f"{url}/v1/translate", json={"text": [sentence], "beam": beam, "attention": True}, timeout=30)
    response.raise_for_status()
    return response.json()["results"][0]["translations"][0]


def test_translate_draw_and_highlight(page, live_server, translator, tmp_path):
    page.goto(live_server.url + "/")
    sync_api.expect(page.locator("#model-info")).to_contain_text("en → de")
    default_beam = translator.config.decode.beam_size
    assert page.input_value("#beam") == str(default_beam)  # the model's beam, until the user changes it
    beam = 1 if default_beam != 1 else 2
    page.fill("#source", SENTENCE)
    page.fill("#beam", str(beam))
    with page.expect_request("**/v1/translate") as request:
        page.click("#translate")
    assert json.loads(request.value.post_data)["beam"] == beam
    page.wait_for_selector(".result .heatmap .cell")

    expected = api_translation(live_server.url, SENTENCE, beam=beam)
    assert page.inner_text(".result .translation") == expected["text"]
    assert f"score {expected['score']:.3f}" in page.inner_text(".result .meta")

    # One cell per (target, source) pair, </s> included on both sides.
    pieces = expected["attention"]["pieces"]
    assert pieces["target"] == expected["tokens"] + ["</s>"]
    assert page.locator(".result .cell").count() == len(pieces["target"]) * len(pieces["source"])
    assert page.locator(".result .src-label").count() == len(pieces["source"])
    assert page.locator(".result .trg-label").count() == len(pieces["target"])

    # Hover a cell: its target token is highlighted, and so is the source token it attended to most.
    row = 1
    strongest = max(range(len(pieces["source"])), key=lambda col: pieces["weights"][row][col])
    cell = page.locator(f'.result .cell[data-row="{row}"][data-col="0"]')
    cell.hover()
    sync_api.expect(cell).to_have_class("cell in-focus current")
    sync_api.expect(page.locator(f'.trg-label[data-row="{row}"]')).to_have_class("trg-label active")
    sync_api.expect(page.locator(f'.src-label[data-col="{strongest}"]')).to_contain_class("attended")
    sync_api.expect(page.locator(".readout")).to_contain_text("attended to:")
    page.screenshot(path=str(tmp_path / "viewer-hover.png"), full_page=True)

    # The reverse: hover a source token, the target token that attended to it most is highlighted.
    column = 0
    strongest_row = max(range(len(pieces["target"])), key=lambda r: pieces["weights"][r][column])
    page.hover(f'.src-label[data-col="{column}"]')
    sync_api.expect(page.locator(f'.src-label[data-col="{column}"]')).to_contain_class("active")
    sync_api.expect(page.locator(f'.trg-label[data-row="{strongest_row}"]')).to_contain_class("attended")
    sync_api.expect(page.locator(f'.trg-label[data-row="{row}"]')).not_to_contain_class("active")

    # Word level: the characters of each word merged, one cell per (target word, source word).
    words = expected["attention"]["words"]
    page.check("#level-words")
    sync_api.expect(page.locator(".result .cell")).to_have_count(len(words["target"]) * len(words["source"]))
    assert page.locator(".result .src-label").all_inner_texts() == words["source"]
    page.screenshot(path=str(tmp_path / "viewer-words.png"), full_page=True)

    assert (tmp_path / "viewer-hover.png").stat().st_size > 0
    assert page.outside_requests == []
    assert page.errors == []


def test_invalid_input_shows_the_servers_message(page, live_server):
    page.goto(live_server.url + "/")
    sync_api.expect(page.locator("#model-info")).to_contain_text("en → de")
    page.fill("#source", "one two")
    page.evaluate("document.getElementById('beam').removeAttribute('max')")  # get past the browser's own check
    page.fill("#beam", "99")
    page.click("#translate")
    sync_api.expect(page.locator("#status")).to_contain_text("Error 422: beam: Input should be less than or equal to 16")


def test_a_model_without_attention_says_so_instead_of_a_heatmap(browser, toy_none_model_dir):
    from attnmt.serve.app import create_app
    from attnmt.translator import Translator
    from serve_fixtures import LiveServer

    translator = Translator.load(toy_none_model_dir)
    with LiveServer(create_app(translator, model_name="toy-none")) as server:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url + "/")
        sync_api.expect(page.locator("#model-info")).to_contain_text("no attention")
        page.fill("#source", "one two")
        page.click("#translate")
        sync_api.expect(page.locator(".result .readout")).to_contain_text("This model has no attention")
        assert page.inner_text(".result .translation") == translator.translate(["one two"])[0].text
        assert page.locator(".result .heatmap").count() == 0
        page.close()
    assert errors == []


def flagged_sentence(live_server, seed: int, request: dict, flag: str) -> tuple[str, dict]:
    """The first toy sentence (of 200 drawn with ``seed``) whose greedy translation's diagnostics, asked
    for with ``request``, list a word under ``flag``: (sentence, its diagnostics)."""
    from toy import toy_pairs

    for sentence, _ in toy_pairs(200, seed=seed, max_words=8):
        response = httpx.post(f"{live_server.url}/v1/translate", json={"text": sentence, "beam": 1, **request},
                              timeout=30)
        diagnostics = response.json()["results"][0]["translations"][0]["diagnostics"]
        if diagnostics[flag]:
            return sentence, diagnostics
    raise AssertionError(f"no candidate sentence had a word flagged {flag}")


def translate_greedily_by_words(page, live_server, sentence: str) -> None:
    """Open the page, translate ``sentence`` with beam 1 at the level of words, and wait for the heatmap."""
    page.goto(live_server.url + "/")
    sync_api.expect(page.locator("#model-info")).to_contain_text("en → de")
    page.fill("#source", sentence)
    page.fill("#beam", "1")
    page.check("#level-words")
    page.click("#translate")
    page.wait_for_selector(".result .heatmap .cell")


def test_source_words_the_translation_hardly_attended_to_are_marked_with_a_legend(page, live_server):
    """The page asks for diagnostics and marks the source words whose attention mass stayed under the
    omission threshold (and those over the repetition one), as the API reports them, with a legend."""
    # the rough test model leaves some source words unattended; find one
    sentence, diagnostics = flagged_sentence(live_server, seed=41, request={"diagnostics": True}, flag="omitted")
    translate_greedily_by_words(page, live_server, sentence)
    omitted = [diagnostics["src_words"][j] for j in diagnostics["omitted"]]
    over = [diagnostics["src_words"][j] for j in diagnostics["over_attended"]]
    assert page.locator(".result .src-label.unattended").all_inner_texts() == omitted
    assert page.locator(".result .src-label.overattended").all_inner_texts() == over
    sync_api.expect(page.locator(".result .diagnostics")).to_contain_text("possibly untranslated: " + ", ".join(omitted))
    sync_api.expect(page.locator(".result .legend")).to_contain_text("possibly untranslated")
    # at the level of pieces, every piece of a flagged word is marked
    page.check("#level-pieces")
    sync_api.expect(page.locator(".result .src-label.unattended")).not_to_have_count(0)
    marked = "".join(page.locator(".result .src-label.unattended").all_inner_texts()).replace("▁", "")
    assert marked == "".join(omitted)
    assert page.errors == [] and page.outside_requests == []


def test_source_words_the_deletion_test_finds_left_out_are_marked(page, live_server):
    """With a PyTorch model the page also asks for the deletion test and marks the source word the
    translation most looks to have left out, as the API reports it, with a legend."""
    # the rough test model skips words; find a sentence it skips one of
    sentence, diagnostics = flagged_sentence(live_server, seed=43, request={"deletion_test": True}, flag="untranslated")
    left_out = [diagnostics["src_words"][j] for j in diagnostics["untranslated"]]
    translate_greedily_by_words(page, live_server, sentence)
    assert page.locator(".result .src-label.untranslated").all_inner_texts() == left_out
    sync_api.expect(page.locator(".result .diagnostics")).to_contain_text("left out (deletion test): " + ", ".join(left_out))
    sync_api.expect(page.locator(".result .legend")).to_contain_text("deletion test")
    assert page.errors == [] and page.outside_requests == []
