"""`audiocap serve`: captioning over HTTP (app.py), with concurrent requests batched for the one model
(batcher.py), uploads received and decoded within limits (uploads.py) and a web page (static/).
Needs the optional extra `pip install 'audiocap[serve]'` (FastAPI, uvicorn, python-multipart, PyAV)."""
