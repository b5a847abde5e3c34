"""models.yaml: schema errors name the field, sampling variants, backend types, the embedded default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmblend.backends.config import (
    DEFAULT_CONFIG,
    BackendSpec,
    GenerateConfig,
    Sampling,
    build_slots,
    load_backend_config,
)
from llmblend.errors import LlmblendError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


def test_yaml_with_a_local_model_and_an_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KEY", "sk-secret")
    config = load_backend_config(
        write(
            tmp_path,
            """
defaults: {max_tokens: 64, temperature: 0.8}
backends:
  - model: local:smollm2-135m
    samples: 3
  - name: api
    model: gpt-x
    base_url: http://127.0.0.1:9/v1
    api_key_env: TEST_KEY
    concurrency: 8
    variants: [{temperature: 0}, {temperature: 1.0, seed: 7, max_tokens: 32}]
""",
        )
    )
    local, api = config.backends
    assert (local.resolved_type, local.display_name) == ("llama_cpp", "smollm2-135m")
    assert (api.resolved_type, api.display_name) == ("openai", "api")
    local_params = local.sampling_variants(config.defaults)
    assert [p.seed for p in local_params] == [0, 1, 2]
    assert {(p.temperature, p.max_tokens) for p in local_params} == {(0.8, 64)}
    greedy, sampled = api.sampling_variants(config.defaults)
    assert (greedy.decoding_method, greedy.max_tokens) == ("greedy", 64)
    assert sampled.decoding_method == "top_p_sampling(t=1,p=1,seed=7)"
    assert sampled.max_tokens == 32


def test_unknown_keys_and_bad_values_name_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "backends:\n  - model: local:smollm2-135m\n    temprature: 0.5\n    samples: 0\n")
    with pytest.raises(LlmblendError) as info:
        load_backend_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "backends.0.temprature" in message and "backends.0.samples" in message


def test_endpoint_without_base_url_and_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="base_url"):
        BackendSpec(model="gpt-x", type="openai")
    with pytest.raises(ValueError, match="unique"):
        GenerateConfig(backends=[BackendSpec(model="a.gguf"), BackendSpec(model="a.gguf")])


def test_greedy_samples_and_repeated_variants_are_refused() -> None:
    with pytest.raises(LlmblendError, match="identical"):
        BackendSpec(model="x.gguf", samples=2, temperature=0).sampling_variants(Sampling())
    spec = BackendSpec(model="x.gguf", variants=[Sampling(temperature=0.5), Sampling(temperature=0.5)])
    with pytest.raises(LlmblendError, match="same decoding method"):
        spec.sampling_variants(Sampling())


def test_types_are_picked_from_the_model() -> None:
    assert BackendSpec(model="/models/a.gguf").resolved_type == "llama_cpp"
    assert BackendSpec(model="/models/hf-folder").resolved_type == "hf"
    assert BackendSpec(model="x", base_url="http://h/v1").resolved_type == "openai"
    assert BackendSpec(model="x.gguf", type="hf").resolved_type == "hf"


def test_embedded_default_is_two_packaged_models_with_two_samples() -> None:
    assert load_backend_config(None) is DEFAULT_CONFIG
    names = [b.model for b in DEFAULT_CONFIG.backends]
    assert names == ["local:smollm2-135m", "local:gemma3-270m"]
    pytest.importorskip("llama_cpp")
    slots = build_slots(DEFAULT_CONFIG)
    assert len(slots) == 4
    assert len({slot.key for slot in slots}) == 4
    assert {slot.backend.threads for slot in slots} == {max(1, (os.cpu_count() or 1) // 2)}  # cores shared


def test_a_transformers_folder_in_the_config_generates(tiny_causal_lm: Path, tmp_path: Path) -> None:
    import asyncio

    from llmblend.backends.fanout import ask_all
    from llmblend.backends.hf_local import HFBackend

    config = load_backend_config(
        write(
            tmp_path, f"backends:\n  - {{model: '{tiny_causal_lm}', name: tiny, samples: 2, max_tokens: 5}}\n"
        )
    )
    slots = build_slots(config)
    assert all(isinstance(slot.backend, HFBackend) for slot in slots) and slots[0].backend is slots[1].backend
    generations = asyncio.run(ask_all("hello there", slots))
    assert [g.model for g in generations] == ["tiny", "tiny"] and all(g.ok for g in generations)
    assert all(0 < g.completion_tokens <= 5 for g in generations)


def test_the_example_config_in_the_repo_is_valid() -> None:
    config = load_backend_config(Path(__file__).parents[2] / "configs" / "models.example.yaml")
    assert [b.resolved_type for b in config.backends] == ["llama_cpp", "llama_cpp", "openai"]
