"""The HTTP API against the real app: FastAPI's TestClient, and a real uvicorn server on loopback for
concurrent requests. The model is the tiny character-level toy model of serve_fixtures.py."""

from __future__ import annotations

import asyncio
import json
import re

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="attnmt serve needs fastapi (pip install -e .)")
httpx = pytest.importorskip("httpx", reason="the API tests need httpx (pip install -e '.[test]')")

from fastapi.testclient import TestClient  # noqa: E402

from attnmt.explain.alignment import merge_subwords  # noqa: E402
from attnmt.cli import build_parser  # noqa: E402
from attnmt.serve.app import ServeSettings, create_app  # noqa: E402
from attnmt.serve.schemas import RequestLimits  # noqa: E402
from attnmt.translator import Translator  # noqa: E402

pytest_plugins = ["serve_fixtures"]

LIMITS = RequestLimits(max_chars=50, max_texts=4, max_beam=5, max_body_bytes=2000)


@pytest.fixture(scope="module")
def client(translator):
    with TestClient(create_app(translator, ServeSettings(limits=LIMITS), model_name="toy-char")) as test_client:
        yield test_client


def translate(client, **body):
    response = client.post("/v1/translate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_one_text_gives_what_the_python_api_gives(client, translator):
    body = translate(client, text="one two three", beam=3)
    expected = translator.translate(["one two three"], beam=3)[0]
    assert body["beam"] == 3 and body["n_best"] == 1 and body["elapsed_ms"] >= 0
    [result] = body["results"]
    assert result["source"] == "one two three"
    assert result["src_tokens"] == expected.src_tokens
    [hypothesis] = result["translations"]
    assert hypothesis["text"] == expected.text
    assert hypothesis["tokens"] == expected.tokens
    assert hypothesis["score"] == pytest.approx(expected.score, abs=1e-5)
    assert hypothesis["attention"] is None  # not asked for


def test_attention_at_subword_and_word_level(client, translator):
    body = translate(client, text="seven eight", beam=2, attention=True)
    hypothesis = body["results"][0]["translations"][0]
    expected = translator.translate(["seven eight"], beam=2)[0]
    pieces, words = hypothesis["attention"]["pieces"], hypothesis["attention"]["words"]

    src_labels, trg_labels = expected.attention_labels
    assert pieces["source"] == src_labels and pieces["target"] == trg_labels
    weights = np.array(pieces["weights"])
    assert weights.shape == (len(expected.tokens) + 1, len(expected.src_tokens) + 1)
    np.testing.assert_allclose(weights, expected.attention, atol=1e-4)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-3)

    merged, src_words, trg_words = merge_subwords(expected.attention, src_labels, trg_labels)
    assert words["source"] == src_words == ["seven", "eight", "</s>"]
    assert words["target"] == trg_words
    np.testing.assert_allclose(np.array(words["weights"]), merged, atol=1e-4)
    assert len(words["source"]) < len(pieces["source"])  # characters merged into words


def test_diagnostics_with_the_deletion_test_are_what_the_python_api_gives(client, translator):
    texts = ["one two three", "", "four five"]
    body = translate(client, text=texts, beam=2, n_best=2, deletion_test=True)
    expected = translator.translate_n_best(texts, beam=2, n_best=2)  # the empty text has one, empty
    assert [len(n) for n in expected] == [2, 1, 2]
    for result, n_best, found in zip(body["results"], expected, translator.diagnose([n[0] for n in expected])):
        best, *others = result["translations"]
        assert len(result["translations"]) == len(n_best)
        assert best["diagnostics"]["src_words"] == found.src_words
        assert best["diagnostics"]["deletion_gain"] == pytest.approx(found.deletion_gain, abs=1e-3)
        assert best["diagnostics"]["attended_regret"] == pytest.approx(found.attended_regret, abs=1e-3)
        assert best["diagnostics"]["untranslated"] == found.untranslated
        assert all(other["diagnostics"]["deletion_gain"] is None for other in others)  # the best one's only
    plain = translate(client, text="one two three", diagnostics=True)["results"][0]["translations"][0]["diagnostics"]
    assert plain["deletion_gain"] is None and plain["untranslated"] == []


def test_a_list_keeps_order_and_empty_lines(client, translator):
    texts = ["five", "", "nine ten"]
    body = translate(client, text=texts, beam=1, attention=True)
    assert [result["source"] for result in body["results"]] == texts
    expected = translator.translate(texts, beam=1)
    assert [r["translations"][0]["text"] for r in body["results"]] == [t.text for t in expected]
    empty = body["results"][1]["translations"][0]
    assert empty["text"] == "" and empty["tokens"] == [] and empty["attention"] is None


def test_n_best(client, translator):
    body = translate(client, text="two four", beam=4, n_best=3)
    hypotheses = body["results"][0]["translations"]
    expected = translator.translate_n_best(["two four"], beam=4, n_best=3)[0]
    assert [h["text"] for h in hypotheses] == [t.text for t in expected]
    scores = [h["score"] for h in hypotheses]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    ("body", "field", "phrase"),
    [
        ({"text": "one", "beam": 0}, "beam", "greater than or equal to 1"),
        ({"text": "one", "beam": 6}, "beam", "less than or equal to 5"),
        ({"text": "one", "beam": 2, "n_best": 3}, "body", "n_best (3) cannot exceed beam (2)"),
        ({"text": "x" * 51}, "text", "the text has 51 characters; at most 50"),
        ({"text": ["one", "y" * 60]}, "text", "text 1 has 60 characters"),
        ({"text": ["one"] * 5}, "text", "5 texts in one request; at most 4"),
        ({"text": []}, "text", "at least one text"),
        ({"text": 5}, "text", "a string or a list of strings"),
        ({"text": ["one", 2]}, "text", "a string or a list of strings"),
        ({"beam": 2}, "text", "Field required"),
        ({"text": "one", "beams": 2}, "beams", "Extra inputs are not permitted"),
        ({"text": "one", "attention": "maybe"}, "attention", "valid boolean"),
    ],
)
def test_invalid_requests_get_422_saying_what_is_wrong(client, body, field, phrase):
    response = client.post("/v1/translate", json=body)
    assert response.status_code == 422
    error = response.json()
    assert error["error"] == "invalid_request"
    assert error["message"].startswith(f"{field}: ")
    assert phrase in error["message"]
    assert error["details"] and all("loc" in d and "msg" in d for d in error["details"])


def test_malformed_json_is_422(client):
    response = client.post("/v1/translate", content=b'{"text": "one"', headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_body_too_large_is_413_declared_or_chunked(client):
    body = json.dumps({"text": "one " * 600}).encode()  # 2400 bytes > 2000
    response = client.post("/v1/translate", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"error": "body_too_large", "message": "the request body is larger than 2000 bytes"}

    def chunks():  # no Content-Length: the limit counts what arrives
        for start in range(0, len(body), 500):
            yield body[start:start + 500]

    response = client.post("/v1/translate", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_timeout_is_504(translator):
    settings = ServeSettings(timeout=1e-6)
    with TestClient(create_app(translator, settings)) as slow_client:
        response = slow_client.post("/v1/translate", json={"text": "one two"})
        assert response.status_code == 504
        assert response.json()["error"] == "timeout"
        assert slow_client.get("/health").status_code == 200  # the service goes on


def test_model_info(client, translator):
    info = client.get("/v1/model").json()
    assert info["name"] == "toy-char"
    assert (info["src_lang"], info["trg_lang"]) == ("en", "de")
    assert info["src_vocab_size"] == translator.src_tokenizer.vocab_size
    assert info["trg_vocab_size"] == translator.trg_tokenizer.vocab_size
    assert info["model"]["hidden_size"] == translator.config.model.hidden_size
    assert info["vocab"]["type"] == "char"
    assert info["limits"]["max_beam"] == 5 and info["batching"]["enabled"] is True
    assert info["parameters"] == sum(p.numel() for p in translator.model.parameters())
    assert info["deletion_test"] is True  # a PyTorch model with attention


def test_health_counts_the_requests_batches_and_texts_decoded(translator):
    with TestClient(create_app(translator, ServeSettings(limits=LIMITS))) as fresh:
        assert fresh.get("/health").json() == {
            "status": "ok", "decoded": {"requests": 0, "batches": 0, "texts": 0, "mean_texts_per_batch": 0.0}
        }
        translate(fresh, text="one two", beam=2)
        translate(fresh, text=["three", "four five", "six"], beam=2)
        assert fresh.post("/v1/translate", json={"text": "one", "beam": 99}).status_code == 422  # never decoded
        health = fresh.get("/health").json()
    assert health == {"status": "ok", "decoded": {"requests": 2, "batches": 2, "texts": 4, "mean_texts_per_batch": 2.0}}


def test_unknown_paths_are_a_json_404(client):
    missing = client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_docs_and_page_are_served_without_any_outside_asset(client):
    openapi = client.get("/openapi.json").json()
    assert "/v1/translate" in openapi["paths"] and "/v1/model" in openapi["paths"]
    for path in ("/docs", "/", "/static/app.js", "/static/style.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        outside = [url for url in re.findall(r"(?:src|href)=[\"']?(https?://[^\"' >]+)", response.text)]
        outside += re.findall(r"(?:fetch|import)\(\s*[\"'](https?://[^\"']+)", response.text)
        assert not outside, f"{path} loads {outside}"
    docs = client.get("/docs").text
    for asset in re.findall(r"(?:src|href)=['\"](/[^'\"]+)", docs):  # swagger's JS and CSS, served by attnmt
        assert client.get(asset).status_code == 200, asset


def test_concurrent_requests_on_a_live_server_are_batched(live_server, translator):
    texts = ["one", "two three", "four five six", "seven", "eight nine", "ten one", "two", "three four"] * 2

    async def send_all():
        async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
            before = (await http.get("/health")).json()["decoded"]
            responses = await asyncio.gather(
                *(http.post("/v1/translate", json={"text": text, "beam": 2}) for text in texts)
            )
            after = (await http.get("/health")).json()["decoded"]
            return before, responses, after

    before, responses, after = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * len(texts)
    expected = [t.text for t in translator.translate(texts, beam=2)]
    assert [r.json()["results"][0]["translations"][0]["text"] for r in responses] == expected
    assert after["requests"] - before["requests"] == len(texts)
    assert after["batches"] - before["batches"] < len(texts)  # at least some requests shared a batch


def test_serve_command_listens_on_loopback_by_default():
    args = build_parser().parse_args(["serve", "some/model"])
    assert (args.host, args.port, args.batching) == ("127.0.0.1", 8000, True)
    assert build_parser().parse_args(["serve", "m", "--no-batching"]).batching is False


def test_serve_with_a_shortlist_the_model_does_not_have_is_an_error_naming_the_file(toy_model_dir):
    """--shortlist reaches the loading of the model: without attnmt shortlist first, the server does not
    start, and says which file it lacks."""
    import subprocess
    import sys

    from attnmt.store import SHORTLIST_FILE

    completed = subprocess.run([sys.executable, "-m", "attnmt", "serve", str(toy_model_dir), "--shortlist",
                                "--port", "0"], capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    assert SHORTLIST_FILE in completed.stderr


def test_a_model_without_attention_translates_and_says_it_has_no_attention(toy_none_model_dir):
    translator = Translator.load(toy_none_model_dir)
    with TestClient(create_app(translator, model_name="toy-none")) as none_client:
        info = none_client.get("/v1/model").json()
        assert info["model"]["attention"] == "none" and info["deletion_test"] is False
        body = translate(none_client, text=["one two", ""], beam=2, attention=True)
        refused = none_client.post("/v1/translate", json={"text": "one two", "deletion_test": True})
        assert refused.status_code == 422 and "no attention" in refused.json()["message"]
    translated, empty = (result["translations"][0] for result in body["results"])
    assert translated["text"] == translator.translate(["one two"], beam=2)[0].text != ""
    assert translated["attention"] is None and empty["attention"] is None
