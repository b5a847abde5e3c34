"""``llmblend serve``: the blending gateway behind one OpenAI-compatible endpoint."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from llmblend.cli.common import app, err_console, user_errors

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("serve")
def serve_command(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="A serve.yaml (the README's Serving section shows one); default: the packaged local "
            "models, the shipped ranker and fuser, offline.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The port to listen on.")] = 8000,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            help="An environment variable holding the API keys clients must send (comma-separated)."
        ),
    ] = None,
    api_keys_file: Annotated[
        Path | None, typer.Option(help="A file of API keys clients must send, one per line.")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow listening on a non-loopback address without API keys.")
    ] = False,
    grace: Annotated[
        float,
        typer.Option(min=0, help="Seconds in-flight requests get to finish on shutdown (Ctrl-C, SIGTERM)."),
    ] = 30.0,
) -> None:
    """Serve the ensemble as one OpenAI-compatible model: point any OpenAI client's base_url at it.

    Exposed models: blend (every backend, ranked, the top-K fused and guarded), rank (the top-ranked
    answer), best-of-n:BACKEND (n samples of one backend, ranked best first), each backend under its
    own name (a plain proxy), and the profiles of the config. Also POST /v1/rank and /v1/compare (the
    ranker as a service), POST /v1/feedback, GET /health, /ready, /metrics and a playground at /.

    Without API keys the gateway listens only on loopback addresses unless --insecure is given.
    Keys are compared in constant time and never logged.
    """
    with user_errors():
        if not 0 <= port <= 65535:
            raise ValueError(f"--port {port} is not a TCP port (0 to 65535)")
        try:
            import uvicorn

            from llmblend.serve.app import ServeSettings, create_app
        except ImportError as exc:
            raise ImportError(f"{exc}; run: pip install 'llmblend[serve]'") from exc
        from llmblend.serve.config import load_serve_config
        from llmblend.serve.limits import ApiKeys

        settings = ServeSettings(load_serve_config(config), ApiKeys.load(api_key_env, api_keys_file))
        if not settings.api_keys.enabled and not is_loopback(host) and not insecure:
            raise ValueError(
                f"--host {host} is reachable from other machines and no API keys are set; give "
                "--api-key-env NAME or --api-keys-file FILE, or --insecure to serve without keys"
            )
        if not settings.api_keys.enabled:
            err_console.print("[yellow]no API keys: any client that reaches the port may use it[/yellow]")
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            timeout_graceful_shutdown=grace,
            log_level="info",
        )
