"""Fixtures of the serving tests (load with ``pytest_plugins = ["serve_fixtures"]``): a tiny
character-level model of the toy task (tests/toy.py), so that words have several pieces and the
word-level view differs from the subword one, and a real uvicorn server on loopback."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from attnmt.config import VocabConfig
from attnmt.translator import Translator


@pytest.fixture(scope="session")
def char_model_dir(tmp_path_factory) -> Path:
    """About 5 s of training: the outputs are rough, which the serving tests do not mind."""
    from attnmt.training.loop import train
    from toy import toy_config, write_toy_corpus

    root = tmp_path_factory.mktemp("serve_model")
    train_prefix, valid_prefix = write_toy_corpus(root / "data", n_train=300)
    config = toy_config(train_prefix, valid_prefix, max_steps=100, valid_every=1000)
    config = dataclasses.replace(config, vocab=VocabConfig(type="char", size=60, joint=False, byte_fallback=False))
    train(config, root / "model", progress=False, log=lambda message: None)
    return root / "model"


@pytest.fixture(scope="session")
def translator(char_model_dir: Path) -> Translator:
    return Translator.load(char_model_dir)


class LiveServer:
    """A uvicorn server for ``app`` in a background thread, on a free loopback port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        host, port = self.socket.getsockname()
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


@pytest.fixture(scope="session")
def live_server(translator: Translator) -> Iterator[LiveServer]:
    """The real service (micro-batching on) served by uvicorn on 127.0.0.1."""
    from attnmt.serve.app import create_app

    with LiveServer(create_app(translator, model_name="toy-char")) as server:
        yield server
