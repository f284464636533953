"""`packcache generate` end to end: the installed console script, a real MP4 decoded with PyAV,
and one clear line with a non-zero exit for every bad argument."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image


def packcache(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("packcache") or str(Path(sys.executable).parent / "packcache")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "in.png"
    y, x = np.mgrid[0:180, 0:320]
    rgb = np.stack([x * 255 // 320, y * 255 // 180, (x + y) % 256], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def test_generate_writes_a_decodable_mp4(image: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    res = packcache(
        "generate",
        "--image",
        str(image),
        "--prompt",
        "waves roll in",
        "--frames",
        "9",
        "--steps",
        "2",
        "--cache-policy",
        "packcache",
        "--policy-param",
        "window=2",
        "--seed",
        "3",
        "--size",
        "128x64",
        "-o",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "wrote" in res.stderr and "per latent frame" in res.stderr
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.average_rate == 12
    assert len(frames) == 9
    assert frames[0].shape == (64, 128, 3)


def test_generate_defaults_to_the_demo_model_and_its_card(image: Path, tmp_path: Path) -> None:
    """Only an image, a prompt and a file: `builtin:demo` at its card's size and length."""
    out = tmp_path / "demo.mp4"
    res = packcache("generate", "--image", str(image), "--prompt", "pan left", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith("builtin:demo: 128x64, 21 frames (6 latent), 12 steps")
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 21 and frames[0].shape == (64, 128, 3)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--image", "MISSING.png"], "no such file"),
        (["--image", "README"], "not a recognised image"),
        (["--frames", "1"], "--frames 1"),
        (["--frames", "99999"], "--frames 99999"),
        (["--cache-policy", "lru"], "choose from 'full', 'sliding', 'packcache'"),
        (["--policy-param", "windw=3"], "parameters: window, "),  # names the valid keys
        (["--policy-param", "selector=best"], "'best'"),
        (["--policy-param", "b_min=0.3"], "b_min=0.3 is not a quota"),
        (["--policy-param", "budget=0.01"], "raise budget"),
        (["--size", "100x64"], "--size"),
        (["--model", "builtin:nope"], "unknown built-in model"),
        (["--model", "/no/such/checkpoint"], "does not exist"),
    ],
)
def test_bad_arguments_give_one_line(
    image: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    (tmp_path / "README").write_text("not an image")
    base = {"--image": str(image), "--prompt": "x", "-o": str(tmp_path / "o.mp4")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = str(tmp_path / value) if value in ("MISSING.png", "README") else value
    res = packcache("generate", *[t for kv in base.items() for t in kv])
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert needle in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_help_documents_every_command() -> None:
    res = packcache("--help")
    assert res.returncode == 0
    assert "serve" in res.stdout and "generate" in res.stdout
    serve = " ".join(packcache("serve", "--help").stdout.split())  # unwrapped
    assert "else packcache (window=3, rho=0.5, budget=1.0, b_min=0.0, drop_masked=False" in serve
    gen = packcache("generate", "--help")
    for flag in (
        "--image",
        "--prompt",
        "--frames",
        "--cache-policy",
        "--seed",
        "--model",
        "--tokenizer",
        "--output",
    ):
        assert flag in gen.stdout


def test_generate_without_an_image_is_text_to_video(tmp_path: Path) -> None:
    """No --image: frame 0 is generated too; the card's size (builtin:demo: 128x64)."""
    out = tmp_path / "t2v.mp4"
    res = packcache(
        "generate", "--prompt", "a red square", "--frames", "5", "--steps", "1", "-o", str(out)
    )
    assert res.returncode == 0, res.stderr
    assert "128x64" in res.stderr
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (64, 128, 3)
