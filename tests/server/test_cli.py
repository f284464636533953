"""`packcache serve` flags mirror Settings; the environment fills what flags leave out."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import build_parser
from server.settings import Settings


def settings_from(argv: list[str]) -> Settings:
    args = build_parser().parse_args(["serve", *argv])
    return Settings(**{k: v for k, v in vars(args).items() if k in Settings.model_fields})


def test_every_setting_is_a_documented_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    for name, field in Settings.model_fields.items():
        assert "--" + name.replace("_", "-") in text, name
        assert f"PACKCACHE_{name.upper()}" in text and field.description, name


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PACKCACHE_PORT", "9001")
    monkeypatch.setenv("PACKCACHE_MAX_QUEUED", "5")
    monkeypatch.setenv("PACKCACHE_API_KEYS", "k1, k2,k3")
    s = settings_from(
        [
            "--port",
            "9002",
            "--data-dir",
            str(tmp_path),
            "--no-warmup",
            "--default-policy-params",
            '{"window": 2}',
            "--cors-origins",
            "a,b",
        ]
    )
    assert (s.port, s.max_queued, s.data_dir, s.warmup) == (9002, 5, tmp_path, False)
    assert s.api_keys == ["k1", "k2", "k3"]  # all of them, never silently truncated
    assert s.default_policy_params == {"window": 2} and s.cors_origins == ["a", "b"]


def test_bad_values_are_refused() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--dtype", "float8"])
    with pytest.raises(ValueError, match="max_running"):
        settings_from(["--max-running", "0"])


def test_defaults_run_the_builtin_model_on_cpu() -> None:
    s = Settings()
    assert (s.model, s.tokenizer, s.steps) == ("builtin:tiny-random", "builtin:patch", 8)
    assert s.latent_frames == 3
    real = Settings(model="/ckpt/Lumos-1")
    assert (real.steps, real.latent_frames) == (50, 7)
    assert str(s.torch_dtype()) in ("torch.float32", "torch.bfloat16")
