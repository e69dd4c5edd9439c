"""`audiocap serve`: the HTTP API and web page (audiocap.serve.app) on uvicorn."""
from __future__ import annotations

import ipaddress
import os
import sys

API_KEY_VARIABLE = "AUDIOCAP_API_KEY"


def configure_serve(parser) -> None:
    from audiocap.cli.args import positive_int
    from audiocap.options import PRECISIONS

    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 = every network)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--api-key", default=None,
                        help=f"require this key (X-API-Key header) on /v1/*; default: ${API_KEY_VARIABLE} if set")
    parser.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload accepted (default: 50)")
    parser.add_argument("--max-audio-seconds", type=float, default=600.0,
                        help="longest recording accepted, with `segment` (default: 600)")
    parser.add_argument("--max-pending", type=positive_int(), default=16,
                        help="requests in flight at most; more get 503 with Retry-After (default: 16)")
    parser.add_argument("--batch-size", type=positive_int(), default=8,
                        help="clips captioned together from concurrent requests (default: 8)")
    parser.add_argument("--batch-window-ms", type=float, default=20.0,
                        help="how long the model waits for more requests to batch (default: 20)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a request may take (default: 120)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="decoder weights (see `caption`)")


def run_serve(args) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `caption`: idle OpenMP threads sleep (before torch loads)
    from audiocap.errors import AudiocapError

    for name in ("max_upload_mb", "max_audio_seconds", "batch_window_ms", "timeout"):
        if not getattr(args, name) > 0:
            raise AudiocapError(f"--{name.replace('_', '-')} must be above 0, not {getattr(args, name)}")
    try:
        import uvicorn

        from audiocap.serve.app import create_app
    except ImportError as err:
        raise AudiocapError(f"`audiocap serve` needs the serve extra ({err.name} is missing): "
                            "pip install 'audiocap[serve]'") from None
    from audiocap.caption import load_model

    api_key = args.api_key or os.environ.get(API_KEY_VARIABLE) or None
    if not is_loopback(args.host) and api_key is None:
        print(f"warning: listening on {args.host} without an API key: anyone who reaches this address can use the "
              f"server (set --api-key or ${API_KEY_VARIABLE})", file=sys.stderr)
    app = create_app(
        load_model(args.model, args.device, args.precision), args.model, api_key=api_key,
        max_upload_bytes=round(args.max_upload_mb * 1e6), max_audio_seconds=args.max_audio_seconds,
        max_pending=args.max_pending, max_batch_clips=args.batch_size,
        collect_seconds=args.batch_window_ms / 1000, request_timeout=args.timeout)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    return 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
