"""``llmblend serve`` as a process: config errors, the loopback rule, graceful shutdown on SIGTERM,
and (slow) the embedded default config with the packaged local models through the SDK."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.cli.serve import is_loopback
from llmblend.serve.config import load_serve_config
from serve_helpers import free_port

LLMBLEND = [sys.executable, "-m", "llmblend"]


def test_a_config_with_an_unknown_key_names_the_file_and_key_path(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(
        yaml.safe_dump({"backends": [{"model": "local:smollm2-135m"}], "limits": {"max_tokenz": 5}})
    )
    result = CliRunner().invoke(app, ["serve", "--config", str(path)])
    assert result.exit_code != 0
    assert str(path) in result.output and "limits.max_tokenz" in result.output


def test_a_profile_naming_an_unknown_backend_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    config = {"backends": [{"model": "local:smollm2-135m"}], "profiles": {"fast": {"backends": ["gpt-9"]}}}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(Exception, match="gpt-9"):
        load_serve_config(path)


def test_the_example_config_is_valid() -> None:
    config = load_serve_config(Path(__file__).parents[2] / "configs" / "serve.example.yaml")
    assert "blend-fast" in config.model_names


def test_a_public_address_without_keys_is_refused_unless_insecure() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "--insecure" in result.output and "--api-key-env" in result.output


def _start(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [*LLMBLEND, "serve", "--port", str(port), *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, f"http://127.0.0.1:{port}"


def _wait_ready(process: subprocess.Popen, base_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"llmblend serve exited early:\n{process.stdout.read()}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"not ready within {timeout_s} s:\n{process.stdout.read()}")


def test_sigterm_lets_the_request_in_flight_finish(scripted_server, tmp_path: Path) -> None:
    config = {
        "backends": [
            {"name": "alpha", "model": "alpha", "base_url": scripted_server.base_url, "max_retries": 0}
        ],
        "ranker": {"spec": "longest"},
        "fuser": "none",
    }
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    scripted_server.script_for("alpha", [("ok", 2.0)])
    process, base_url = _start(["--config", str(path), "--api-key-env", "TEST_KEYS"], {"TEST_KEYS": "secret"})
    try:
        _wait_ready(process, base_url, 60)
        answers: list[httpx.Response] = []
        body = {"model": "alpha", "messages": [{"role": "user", "content": "in flight"}]}
        headers = {"Authorization": "Bearer secret"}
        caller = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=30)
            )
        )
        caller.start()
        deadline = time.monotonic() + 10
        while not scripted_server.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        caller.join(timeout=30)
        # uvicorn shuts down gracefully, then re-raises the signal it caught (exit status -SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    (answer,) = answers
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "echo: in flight"
    assert "secret" not in process.stdout.read()  # keys are never logged


@pytest.mark.slow
def test_the_embedded_defaults_serve_the_local_models_through_the_sdk() -> None:
    """README's example: no config, no network; blend answers, streams, and a wrong key is 401."""
    import openai

    process, base_url = _start(["--api-key-env", "TEST_KEYS"], {"TEST_KEYS": "k"})
    try:
        _wait_ready(process, base_url, 600)
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="k", max_retries=0, timeout=600)
        completion = client.chat.completions.create(
            model="blend",
            messages=[{"role": "user", "content": "Name two colours."}],
            max_tokens=48,
            extra_body={"llmblend": {"details": True}},
        )
        details = completion.model_extra["llmblend"]
        assert completion.choices[0].message.content.strip()
        assert {c["model"] for c in details["candidates"]} == {"smollm2-135m", "gemma3-270m"}
        assert details["returned"] in ("fused", "top")
        assert completion.usage.completion_tokens > 0
        stream = client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=16,
            stream=True,
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip()
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0).models.list()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
