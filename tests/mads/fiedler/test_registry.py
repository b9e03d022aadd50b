"""Fiedler's configuration, environment discovery, model selection and the zero-token ``models`` tool."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bus.envelope import field_errors
from mads.fiedler.registry import Registry, UnknownModel, discover
from mads.fiedler.schemas import FiedlerConfig, ModelSpec
from tests.mads.fiedler.harness import KEY_ENV, SECRET_KEY, config, ecosystem, model
from tests.support.llm_server import Reply, ScriptedLLM

DISCOVERY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MAD_LLM_API_BASE", "MAD_LLM_MODEL")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in (*DISCOVERY_VARS, "MAD_LLM_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def errors(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, str]:
    return {f.field: f.reason for f in field_errors(exc.value)}


def test_config_from_toml_shape() -> None:
    cfg = FiedlerConfig.model_validate(
        {
            "retries": 1,
            "roles": {"imperator": "local", "consultant": "gpt"},
            "fallbacks": {"gpt": ["local"]},
            "models": [
                {"name": "local", "model": "openai/llama3.1", "api_base": "http://127.0.0.1:11434/v1"},
                {"name": "gpt", "model": "openai/gpt-4o-mini", "api_key_env": "OPENAI_API_KEY", "max_tokens": 512},
            ],
        }
    )
    registry = Registry.build(cfg, env={})
    assert registry.source == "config"
    assert registry.select("consultant").name == "gpt"
    assert registry.select("regeneration").name == "local"
    assert [m.name for m in registry.chain(registry.by_name["gpt"])] == ["gpt", "local"]


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        ({"modles": []}, "modles", "Extra inputs are not permitted"),
        ({"models": [{"name": "x", "model": "gpt-4o"}]}, "models.0.model", "must be '<provider>/<model>'"),
        ({"models": [{"name": "x", "model": "openai/x", "api_base": "ftp://h"}]}, "models.0.api_base", "http(s) URL"),
        ({"models": [{"name": "x", "model": "openai/x", "api_key": "sk-1"}]}, "models.0.api_key", "Extra inputs"),
        ({"models": [{"name": "x", "model": "openai/x", "roles": ["Bad Role"]}]}, "models.0.roles", "must match"),
        ({"roles": {"imperator": "ghost"}}, "(root)", "roles.imperator: unknown model 'ghost'"),
        (
            {"models": [{"name": "x", "model": "openai/x"}], "fallbacks": {"x": ["y"]}},
            "(root)",
            "fallbacks.x: unknown model 'y'",
        ),
        (
            {"models": [{"name": "x", "model": "openai/x"}, {"name": "x", "model": "openai/y"}]},
            "(root)",
            "duplicate name(s) ['x']",
        ),
        ({"retries": -1}, "retries", "greater than or equal to 0"),
    ],
)
def test_bad_config_names_the_field(raw: dict, field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as exc:
        FiedlerConfig.model_validate(raw)
    found = errors(exc)
    assert field in found, found
    assert reason in found[field]


def test_api_key_sources_are_exclusive() -> None:
    with pytest.raises(ValidationError, match="api_key_env or api_key_secret, not both"):
        ModelSpec(name="x", model="openai/x", api_key_env="A", api_key_secret="llm/a")


def test_discovery_from_environment() -> None:
    env = {
        "MAD_LLM_API_BASE": "http://127.0.0.1:8080/v1",
        "MAD_LLM_MODEL": "qwen2.5",
        "OPENAI_API_KEY": "sk-a",
        "ANTHROPIC_API_KEY": "sk-b",
        "GEMINI_API_KEY": "g",
    }
    found = discover(env)
    assert [(m.name, m.model, m.api_base, m.api_key_env) for m in found] == [
        ("local", "openai/qwen2.5", "http://127.0.0.1:8080/v1", None),
        ("openai", "openai/gpt-4o-mini", None, "OPENAI_API_KEY"),
        ("anthropic", "anthropic/claude-haiku-4-5", None, "ANTHROPIC_API_KEY"),
        ("gemini", "gemini/gemini-2.0-flash", None, "GEMINI_API_KEY"),
    ]
    assert discover({"MAD_LLM_API_BASE": "http://h/v1"}) == []
    assert discover({"MAD_LLM_API_BASE": "http://h/v1", "MAD_LLM_MODEL": "m", "MAD_LLM_API_KEY": "k"})[
        0
    ].api_key_env == ("MAD_LLM_API_KEY")
    registry = Registry.build(FiedlerConfig(), env=env)
    assert registry.source == "environment"
    assert registry.select("imperator").name == "local"
    configured = FiedlerConfig(models=[ModelSpec(name="mine", model="openai/m")])
    assert [m.name for m in Registry.build(configured, env=env).models] == ["mine"]
    assert Registry.build(FiedlerConfig(), env={}).source == "none"


def test_unknown_explicit_model() -> None:
    registry = Registry.build(FiedlerConfig(models=[ModelSpec(name="m", model="openai/m")]), env={})
    with pytest.raises(UnknownModel, match="unknown model 'n'"):
        registry.select("imperator", "n")


async def test_discovered_local_server_answers(tmp_path: Path, llm_server: ScriptedLLM, clean_env) -> None:
    clean_env.setenv("MAD_LLM_API_BASE", llm_server.base_url)
    clean_env.setenv("MAD_LLM_MODEL", "scripted")
    llm_server.script(Reply(text="local answer"))
    async with ecosystem(tmp_path, FiedlerConfig(retries=0)) as eco:
        (result,) = (await eco.chat()).data()
        assert result["model"] == "local" and result["content"] == "local answer"
        report = (await eco.command("models")).data()[0]
        assert report["source"] == "environment"
        assert report["models"][0]["key_source"] == "none"
    assert llm_server.last_request.model == "scripted"


async def test_models_and_usage_commands_use_no_llm(
    tmp_path: Path, llm_server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)
    cfg = config(
        llm_server,
        model(llm_server, "a", "model-a", roles=["imperator", "consultant"], max_tokens=256),
        model(llm_server, "b", "model-b", input_cost_per_token=1e-6),
        fallbacks={"a": ["b"]},
        roles={"regeneration": "b"},
    )
    async with ecosystem(tmp_path, cfg) as eco:
        report = (await eco.command("models")).data()[0]
        usage = (await eco.command("usage")).data()[0]
    assert llm_server.received == []
    assert report["configured"] is True and report["source"] == "config"
    assert report["roles"] == {"regeneration": "b", "imperator": "a", "consultant": "a"}
    first = report["models"][0]
    assert first["name"] == "a" and first["fallbacks"] == ["b"] and first["max_tokens"] == 256
    assert first["key_source"] == f"env:{KEY_ENV}" and first["key_available"] is True
    assert first["provider"] == "openai" and first["timeout"] == 5.0
    assert SECRET_KEY not in str(report)
    assert usage["total"] == {"calls": 0, "failed_calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}


async def test_models_report_without_llm_says_how(tmp_path: Path, llm_server: ScriptedLLM, clean_env) -> None:
    async with ecosystem(tmp_path, FiedlerConfig()) as eco:
        report = (await eco.command("models")).data()[0]
    assert report["configured"] is False and report["models"] == []
    assert "[[fiedler.models]]" in report["how_to_configure"]
