"""`packcache serve` flags mirror Settings; the environment fills what flags leave out."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from packcache_core.demo.card import read_card
from server.entry.cli import build_parser
from server.settings import Settings
from tests.server.conftest import free_port


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


def test_defaults_run_the_builtin_demo_model_on_cpu_with_its_card() -> None:
    s = Settings()
    card = read_card().defaults
    assert (s.model, s.tokenizer) == ("builtin:demo", None)  # None: the card's tokenizer
    assert s.generation_defaults == card

    def summary(settings: Settings) -> tuple[int, int, float, str]:
        d = settings.generation_defaults
        return d.sampling.steps, d.latent_frames, d.sampling.cfg_scale, d.cache_policy

    assert summary(Settings(model="builtin:tiny-random")) == (8, 3, 15.0, "packcache")
    assert summary(Settings(model="/ckpt/Lumos-1")) == (50, 7, 15.0, "packcache")
    mine = Settings(default_steps=5, default_guidance_scale=0.0, default_policy="sliding")
    assert summary(mine) == (5, card.latent_frames, 0.0, "sliding")
    assert Settings(tokenizer="").tokenizer is None  # an empty PACKCACHE_TOKENIZER: the default
    assert str(s.torch_dtype()) in ("torch.float32", "torch.bfloat16")


def test_serve_runs_until_interrupted(tmp_path: Path) -> None:
    """`packcache serve` as users run it: a process that gets ready, then stops on Ctrl-C."""
    port = free_port()
    cmd = [sys.executable, "-m", "server", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(tmp_path / "data"), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/ready"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert httpx.get(url).json() == {"ready": True, "reason": None}
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
    assert (tmp_path / "data" / "jobs.sqlite3").is_file()
