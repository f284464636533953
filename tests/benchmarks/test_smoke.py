"""Smoke tests of the benchmark scripts: they run from a clean checkout and write their outputs.

What it is: each script's `--quick` mode as a subprocess (as a user runs it), then a check that
the JSON has the documented keys and the PNG exists. What it is not: a performance test;
numbers are printed by the scripts and never asserted here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from packcache_core.demo.card import CARD_FILE, WEIGHTS_DIR, WEIGHTS_FILE
from packcache_core.demo.motion import FLOOD_SHARE, two_colours
from tests.helpers import ROOT, run_repo_script

POLICIES = ("full", "sliding", "packcache")
FRAME_KEYS = {
    "index",
    "seconds",
    "attention_share",
    "attention_seconds",
    "pack_seconds",
    "cache_tokens",
    "cache_bytes",
}
POLICY_SUMMARY_KEYS = {
    "total_seconds",
    "last_seconds",
    "speedup_total",
    "speedup_last",
    "attention_share_last",
    "peak_cache_bytes",
    "packing_overhead",
    "profile",
    "flat_after_fill",
}


def run_script(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_repo_script(f"benchmarks/{name}", "--quick", *args, timeout=timeout)


def quick_results(name: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """Run a script's `--quick` mode; its stdout and JSON results (the PNG must exist too)."""
    out = tmp_path / f"{Path(name).stem}.json"
    proc = run_script(name, "--json", str(out))
    print(proc.stdout)  # the numbers, for the CI log (-s or on failure)
    assert out.with_suffix(".png").stat().st_size > 0
    return proc.stdout, json.loads(out.read_text())


def test_cache_policies_quick(tmp_path: Path) -> None:
    stdout, res = quick_results("cache_policies.py", tmp_path)
    assert "torch" in stdout and "| frame |" in stdout
    assert set(res) >= {"config", "machine", "policies", "summary"}
    assert set(res["machine"]) >= {"device", "dtype", "torch"}
    assert set(res["policies"]) == set(POLICIES)
    frames = res["config"]["latent_frames"] - 1
    for name in POLICIES:
        pol = res["policies"][name]
        assert len(pol["frames"]) == frames
        assert all(set(f) >= FRAME_KEYS for f in pol["frames"])
        # instrumentation, not performance: attention is timed inside the forward it belongs to
        assert all(f["forward_seconds"] >= f["attention_seconds"] > 0 for f in pol["frames"])
        assert set(pol["summary"]) >= POLICY_SUMMARY_KEYS
    for name in POLICIES[1:]:
        s = res["policies"][name]["summary"]
        assert {"mean_kl", "mean_draw_agreement", "mean_token_agreement", "forced_exact"} <= set(s)
    assert set(res["summary"]) >= {
        "attention_share_full_last",
        "speedup_total",
        "speedup_last",
        "peak_cache_bytes",
        "packing_overhead",
    }


def test_serve_load_quick(tmp_path: Path) -> None:
    _, res = quick_results("serve_load.py", tmp_path)
    assert set(res) >= {"config", "machine", "policies", "summary"}
    for name in POLICIES:
        s = res["policies"][name]
        assert set(s) >= {
            "completed",
            "rejections",
            "throughput_fps",
            "ttff_p50",
            "frame_latency_p50",
            "frame_latency_p95",
            "frame_latency_max",
            "peak_memory_allocated_bytes",
        }
    assert set(res["summary"]) >= {"throughput_fps", "frame_latency_p95", "rejections"}


def test_pacing_quick(tmp_path: Path) -> None:
    _, res = quick_results("pacing.py", tmp_path)
    assert set(res) >= {"config", "machine", "unpaced", "paced", "summary"}
    assert set(res["machine"]) >= {"load_avg", "load_avg_end"}
    rows = res["paced"]["streams"]
    assert len(rows) == res["config"]["streams"]
    for r in rows:
        assert set(r) >= {"stall_s", "max_lead_s", "bound_s", "realtime_factor", "ttff_s"}
        assert r["ok"] and r["rgb_frames"] == 4 * (res["config"]["latent_frames"] - 1)
    assert set(res["summary"]) >= {"load_ratio", "stall_s_max", "max_lead_s", "lead_limit_s"}


def test_prompt_switch_quick(tmp_path: Path) -> None:
    out = tmp_path / "switch.json"
    print(run_script("prompt_switch.py", "--json", str(out)).stdout)
    res = json.loads(out.read_text())
    assert set(res["summary"]) == {"switch, re-cache", "switch, history kept", "right", "left"}
    lanes = res["summary"]
    assert all(lane["n"] == 2 for lane in lanes.values())
    # builtin:demo follows the change once the history is re-cached, and not without it
    assert (
        lanes["switch, re-cache"]["right_from_switch"] == lanes["right"]["right_from_switch"] == 1
    )
    assert (
        lanes["switch, history kept"]["right_from_switch"]
        == lanes["left"]["right_from_switch"]
        == 0
    )


def test_teacher_forced_quick(tmp_path: Path) -> None:
    _, res = quick_results("teacher_forced.py", tmp_path)
    lanes = res["lanes"]
    policies = ["card", "card", "full", "full", None, None]
    assert [lane.get("policy") for lane in lanes.values()] == policies
    card = next(iter(lanes.values()))
    assert all(len(lane["per_frame"]) == res["meta"]["frames"] - 1 for lane in lanes.values())
    assert all(0 <= a <= 1 for lane in lanes.values() for a in lane["per_frame"])
    # copying the previous frame moved by the true step beats repeating it; the demo model,
    # given the true past, beats repeating it over its first three frames
    assert lanes["reference: moved"]["all"] > lanes["reference: freeze"]["all"]
    assert card["1-3"] > lanes["reference: freeze"]["1-3"]
    # `full` holds every frame whole, so all that copying frame t - 1 moved finds, and the
    # card's packcache holds a part of what full holds: less once it packs
    held_full, held_card = (
        lanes[f"reference: held by {p}, mask 0"]["per_frame"] for p in ("full", "card")
    )
    moved = lanes["reference: moved"]["per_frame"]
    assert all(f >= m for f, m in zip(held_full, moved, strict=True))
    assert all(c <= f for c, f in zip(held_card, held_full, strict=True))
    assert held_card != held_full


def test_teacher_forced_text_only_leaves_frame_0_to_the_policy(tmp_path: Path) -> None:
    """The two-colour paths as image to video and as text to video: the same true codes, and
    under `full` the same cache (frame 0 clean at position 0, an anchor or the first history
    frame), so the same predictions; under the card's packcache frame 0 is packed, then dropped,
    as history only. `--coloured` takes other paths than the default."""
    res = {}
    for mode, flags in (("plain", []), ("image", ["--coloured"]), ("text", ["--coloured"])):
        out = tmp_path / f"{mode}.json"
        flags = [*flags, *(["--text-only"] if mode == "text" else [])]
        print(run_script("teacher_forced.py", *flags, "--json", str(out)).stdout)
        res[mode] = json.loads(out.read_text())
    plain, image, text = res["plain"], res["image"], res["text"]
    assert (image["meta"]["coloured"], image["meta"]["text_only"]) == (True, False)
    assert (text["meta"]["coloured"], text["meta"]["text_only"]) == (True, True)
    for ref in ("reference: freeze", "reference: moved"):
        assert image["lanes"][ref]["per_frame"] == text["lanes"][ref]["per_frame"]
    freeze = "reference: freeze"
    assert image["lanes"][freeze]["per_frame"] != plain["lanes"][freeze]["per_frame"]
    full, card = "full, mask 0", "card, mask 0"
    assert image["lanes"][full]["per_frame"] == text["lanes"][full]["per_frame"]
    assert image["lanes"][card]["per_frame"] != text["lanes"][card]["per_frame"]
    # the same history, with frame 0 held whole beside it as image to video: never less held
    held = f"reference: held by {card}"
    pairs = list(
        zip(image["lanes"][held]["per_frame"], text["lanes"][held]["per_frame"], strict=True)
    )
    assert all(i >= t for i, t in pairs) and any(i > t for i, t in pairs)


def test_a_training_runs_folder_is_measured_in_place_of_the_shipped(tmp_path: Path) -> None:
    """`--weights` serves the built-in models of a training run's `--out` (how snapshots are
    measured on the dev set before one ships): here a copy whose card says another mask."""
    for name in (CARD_FILE, WEIGHTS_FILE):
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    card = json.loads((tmp_path / CARD_FILE).read_text())
    card["sampling"]["history_mask_ratio"] = 0.5
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    out = tmp_path / "tf.json"
    print(run_script("teacher_forced.py", "--weights", str(tmp_path), "--json", str(out)).stdout)
    res = json.loads(out.read_text())
    lanes = ["card, mask 0.5", "reference: held by card, mask 0.5", "full, mask 0.5"]
    assert list(res["lanes"])[:3] == lanes
    assert res["meta"]["weights"] == {
        "folder": str(tmp_path),
        "command": card["training"]["command"],
    }


def test_demo_motion_measures_a_snapshot_with_changed_sampling(tmp_path: Path) -> None:
    """demo_motion at its smallest: a training run's folder (`--weights`), the card's sampling
    changed by name (`--sampling`), the text-only and prompt-change lanes under two policies,
    two seeds per scene in the prompt-change lanes."""
    for name in (CARD_FILE, WEIGHTS_FILE):
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    out = tmp_path / "dm.json"
    small = ["--images", "1", "--lengths", "3", "--open-frames", "0", "--policies", "card"]
    two_knobs = "packcache:window=2,budget=1.5"  # one spec in a comma-separated list
    text = ["--text-captions", "1", "--text-frames", "3", "--text-policies", f"card,{two_knobs}"]
    args = [*small, *text, "--weights", str(tmp_path), "--threads", "1", "--json", str(out)]
    more = ["--sampling", "temperature=0.5", "--switch-seeds", "2", "--text-anchored"]
    more += ["--switch-policies", "card,full"]
    proc = run_repo_script("benchmarks/demo_motion.py", *args, *more)
    print(proc.stdout)
    res = json.loads(out.read_text())
    assert {"card 3", "card text 3", f"{two_knobs} text 3"} <= set(res["lanes"])
    assert res["meta"]["sampling"]["temperature"] == 0.5
    assert res["meta"]["weights"]["folder"] == str(tmp_path)
    for name in ("card text 3", f"{two_knobs} text 3"):  # each video again from its frame 0
        text_lane = res["lanes"][name]
        (run,) = text_lane["runs"]
        assert [s["t"] for s in run["anchored_steps"]] == [s["t"] for s in run["steps"]] == [1, 2]
        anchored = sum(s["as_asked"] for s in run["anchored_steps"]) / 2
        assert text_lane["summary"]["anchored_as_asked"] == anchored
        # frame 0's named colours with their shares: the two largest first, flooded or not
        assert run["colours"] == two_colours(run["colour_shares"])
        assert sum(run["colour_shares"].values()) == pytest.approx(1.0, abs=0.01)
        flooded = max(run["colour_shares"].values()) >= FLOOD_SHARE
        assert text_lane["summary"]["one_colour_floods"] == float(flooded)
    switches = {name: lane for name, lane in res["lanes"].items() if "switch" in name}
    assert list(switches) == ["card switch@7 13", "full switch@7 13"]
    for switch in switches.values():  # 2 seeds x 2 ways each
        runs = switch["runs"]
        assert sorted(r["seed"] for r in runs) == [0, 0, 1000, 1000]
        # a turn: the step into frame 7 the new way, no step above 1.5 pan steps (12 px) there
        # or in the two after it
        turned = [
            r["steps"][6]["as_asked"] and max(abs(s["dx"]) for s in r["steps"][6:9]) <= 12
            for r in runs
        ]
        assert switch["summary"]["turns"] == sum(turned) / len(runs)

    # paired.py on the same requests: a run's metrics as the lanes summarise them; a changed
    # colour check moves the difference by one run's worth; other requests are refused
    flipped = json.loads(out.read_text())
    (run,) = flipped["lanes"]["card text 3"]["runs"]
    run["colours_as_named"] = not run["colours_as_named"]
    other = tmp_path / "flipped.json"
    other.write_text(json.dumps(flipped))
    diff_json = tmp_path / "paired.json"
    paired = ["--base", str(out), "--new", str(other), "--draws", "200", "--json", str(diff_json)]
    run_repo_script("benchmarks/paired.py", *paired)
    rows = {(r["lane"], r["metric"]): r for r in json.loads(diff_json.read_text())["rows"]}
    for name, switch in switches.items():
        assert rows[name, "turned"]["base"] == switch["summary"]["turns"]
        assert rows[name, "turned"]["diff"] == 0.0 and rows[name, "turned"]["ci95"] == [0, 0]
    named = rows["card text 3", "colours_as_named"]
    assert named["new"] - named["base"] == named["diff"] == (1 if run["colours_as_named"] else -1)
    text_summary = res["lanes"]["card text 3"]["summary"]
    assert rows["card text 3", "anchored_as_asked"]["base"] == text_summary["anchored_as_asked"]
    # two lanes of one file, drawn by scene (one scene here: a one-point interval)
    lanes = ["--lanes", "card switch@7 13", "--new-lane", "full switch@7 13", "--unit", "scene"]
    run_repo_script("benchmarks/paired.py", *paired[:4], *lanes, "--json", str(diff_json))
    (row,) = [r for r in json.loads(diff_json.read_text())["rows"] if r["metric"] == "turned"]
    want = (
        switches["full switch@7 13"]["summary"]["turns"]
        - switches["card switch@7 13"]["summary"]["turns"]
    )
    assert row["units"] == 1 and row["diff"] == want and row["ci95"] == [want, want]
    (run,) = flipped["lanes"]["card text 3"]["runs"]
    run["seed"] += 1
    other.write_text(json.dumps(flipped))
    argv = [sys.executable, str(ROOT / "benchmarks/paired.py"), "--base", str(out)]
    proc = subprocess.run([*argv, "--new", str(other)], capture_output=True, text=True)
    assert proc.returncode == 2 and "not the same requests" in proc.stderr, proc.stderr
    other.write_text("[1]")  # JSON, but not demo_motion's
    proc = subprocess.run([*argv, "--new", str(other)], capture_output=True, text=True)
    assert proc.returncode == 2 and "not a demo_motion JSON" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


ANCHOR_CHECK = """
import torch
from benchmarks.demo_motion import Job, prepare
from packcache_core.pipeline import Pipeline, VideoParams

pipeline = Pipeline.load("builtin:demo")
text_only = VideoParams("red and blue, pan left", 3, size=(128, 64), text_only=True)
drawn = torch.randint(0, 400, (8, 16), generator=torch.Generator().manual_seed(0))
prepared = prepare(pipeline, Job(None, "left", text_only, anchor=drawn))
assert torch.equal(prepared.request.first_frame, drawn)
assert prepared.request.first_index == 1 and not prepared.params.text_only
tok = pipeline.video_tokenizer
assert not torch.equal(tok.encode_image(tok.decode(drawn[None])[0]), drawn)
print("anchored")
"""


def test_demo_motion_anchors_the_very_codes_it_is_given() -> None:
    """`--text-anchored` re-runs a text-only video as image to video from the codes it drew:
    the request holds those codes as its conditioning frame (not the encoding of their picture,
    which is other codes) and generates from latent frame 1. (A subprocess at the repository
    root: `benchmarks` here is this test folder.)"""
    proc = subprocess.run(
        [sys.executable, "-c", ANCHOR_CHECK], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "anchored" in proc.stdout, proc.stderr[-2000:]


BOTH = ("demo_motion.py", "teacher_forced.py")


@pytest.mark.parametrize(
    ("scripts", "args", "named"),
    [
        (BOTH[:1], ["--sampling", "guidance=2"], "cfg_scale"),  # names the fields it knows
        (BOTH[:1], ["--text-policies", "card,budget=2"], "'budget=2' is a parameter of no policy"),
        (BOTH[:1], ["--switch-seeds", "0"], "want at least 1"),
        (BOTH[:1], ["--switch-policies", "packcache:window=12"], "no grid token"),  # its grid
        (BOTH, ["--policies", "packcache:window=2,colour=red"], "a parameter 'colour'"),
        (BOTH, ["--model", "lumos-1.safetensors", "--weights", "."], "not of lumos-1"),
        (BOTH, ["--model", "builtin:tiny-random", "--weights", "."], "not of builtin:tiny"),
        (BOTH[:1], ["--text-policies", "full,rho=2"], "cache policy 'full': rho"),  # full:rho=2
        (BOTH, ["--weights", "benchmarks"], "has no demo.json, demo.safetensors"),
        (BOTH[1:], ["--frames", "1"], "at least 2 latent frames"),
    ],
)
def test_demo_benchmarks_refuse_bad_options_before_measuring(
    scripts: tuple[str, ...], args: list[str], named: str
) -> None:
    for script in scripts:
        bad = subprocess.run(
            [sys.executable, f"benchmarks/{script}", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode == 2 and named in bad.stderr, (script, bad.stderr[-500:])


def test_batching_quick(tmp_path: Path) -> None:
    _, res = quick_results("batching.py", tmp_path)
    assert set(res) >= {"config", "machine", "rows", "summary"}
    assert [r["requests"] for r in res["rows"]] == [1, 2, 4, 8]
    for row in res["rows"]:
        assert set(row) >= {"interleaved", "batched", "speedup", "tick_speedup", "same_tokens"}
        for mode in ("interleaved", "batched"):
            assert set(row[mode]) >= {"frames_per_second", "tick_median_seconds", "profile"}
    assert res["summary"]["same_tokens"] is True  # correctness, not speed


def test_threads_quick(tmp_path: Path) -> None:
    out = tmp_path / "threads.json"
    print(run_script("threads.py", "--threads", "default", "--json", str(out)).stdout)
    res = json.loads(out.read_text())
    assert set(res) >= {"model", "busy_processes", "load_avg", "seconds_per_frame"}
    assert {lane: len(t) for lane, t in res["seconds_per_frame"].items()} == {
        "server": 1,
        "generate default": 1,
    }
    assert all(t[0] > 0 for t in res["seconds_per_frame"].values())
    assert res["ratio_to_server"]["server"] == 1.0


def test_attention_quick(tmp_path: Path) -> None:
    out = tmp_path / "attention.json"
    print(run_script("attention.py", "--json", str(out)).stdout)
    res = json.loads(out.read_text())["600"]
    assert set(res) == {"bool", "float", "none", "split", "split-none"}
    assert res["bool"]["vs_bool"] == 1.0
    for exact in ("float", "split", "split-none"):  # the same attention, another way
        assert res[exact]["max_abs_diff_vs_bool"] < 1e-5, exact
    assert res["none"]["max_abs_diff_vs_bool"] > 1e-3  # the mask matters: the check can fail


def test_attention_quick_grouped_heads_bf16(tmp_path: Path) -> None:
    """The device check's form (K/V heads shared, bfloat16), on the CPU."""
    out = tmp_path / "attention.json"
    run_script("attention.py", "--kv-heads", "2", "--dtype", "bfloat16", "--json", str(out))
    res = json.loads(out.read_text())
    assert res["dtype"] == "bfloat16"
    for exact in ("float", "split", "split-none"):
        assert res["600"][exact]["max_abs_diff_vs_bool"] < 2e-2, exact  # bf16 rounding
    assert res["600"]["none"]["max_abs_diff_vs_bool"] > 5e-2


def test_cosmos_stream_quick(tmp_path: Path) -> None:
    """The streaming decoder benchmark at 1/16 width: per-push rows, a summary, window PSNRs."""
    out = tmp_path / "cosmos_stream.json"
    run_script("cosmos_stream.py", "--psnr", "--json", str(out))
    res = json.loads(out.read_text())
    assert len(res["frames"]) == res["config"]["frames"] == 24
    assert all(f["seconds"] > 0 and f["state"] > 0 for f in res["frames"])
    assert res["summary"]["state_bytes_at_end"] == res["frames"][-1]["state"]
    psnr = res["window_psnr"]
    assert psnr["None"]["max_abs_diff"] < 1e-4  # all frames kept: exact
    assert psnr["16"] == psnr["None"]  # a window longer than the 12-frame clip: the same
    assert psnr["2"]["psnr_db"] < psnr["None"]["psnr_db"]


def test_hidden_cfg_quick(tmp_path: Path) -> None:
    out = tmp_path / "hidden_cfg.json"
    run_script("hidden_cfg.py", "--json", str(out))
    res = json.loads(out.read_text())["quick"]
    assert res["per_branch_cpu_seconds"] > 0 and res["hidden_cpu_seconds"] > 0
    assert res["code_agreement"] == 1.0  # float32, the same uniforms: the same draws


@pytest.mark.timeout(900)  # a server start and streams: a minute more than before, idle
def test_device_check_dry(tmp_path: Path) -> None:
    """The GPU slot's one command, end to end on a CPU (tiny config)."""
    proc = run_repo_script(
        "benchmarks/device_check.py", "--dry", "--out", str(tmp_path), timeout=900
    )
    print(proc.stdout)
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["dry"] is True and report["failed"] == []
    steps = report["steps"]
    assert set(steps) == {
        "gpu_tests", "product", "policies_quick", "attention", "batching", "compiled"
    }  # fmt: skip
    product = steps["product"]["results"]  # folder written, server up, streams through the API
    assert product["folder"]["checkpoint_bytes"] > 0 and product["server"]["seconds_to_ready"] > 0
    assert set(product["streams"]) == {"full_c1", "full_c2", "packcache_c1", "packcache_c2"}
    for run in product["streams"].values():
        assert run["completed"] >= 1 and run["failed"] == 0
        assert run["frame_latency_p99"] is not None and run["peak_request_memory_bytes"] > 0
    attention = steps["attention"]["results"]["600"]
    assert set(attention) == {"bool", "float", "none", "split", "split-none"}
    assert all(t > 0 for t in attention.values())
    for name in ("policies_quick", "compiled"):
        policies = steps[name]["results"]
        assert set(policies) == set(POLICIES)
        assert all(p["total_seconds"] > 0 and p["peak_cache_bytes"] > 0 for p in policies.values())
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    assert steps["batching"]["results"]["rows"] == 2
