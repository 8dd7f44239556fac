"""``attnmt serve``: a translation service (FastAPI + uvicorn) with an interactive attention viewer.

    app.py       the app: /v1/translate, /v1/model, /health, /docs, and the web page at /
    schemas.py   request and response models, with the request limits
    batching.py  the micro-batcher: concurrent requests decoded as one batch in one worker thread
    static/      the web page (HTML, CSS, JS): every asset served by attnmt itself, no CDN

Imports nothing heavy itself: ``from attnmt.serve.app import create_app``.
"""
