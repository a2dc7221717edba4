"""The zoo builder at CI size: tiny 32-px models, real training, real process pool and Ray."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from securegaze.data.synthetic import synthetic_style
from securegaze.errors import ConfigError, InputFileError
from securegaze.geometry import PITCH_RANGE, YAW_RANGE
from securegaze.zoo import (
    MANIFEST,
    ZooManifest,
    ZooSpec,
    build_zoo,
    draw_target,
    measured_rate_ranges,
    plan_zoo,
    verify_zoo,
)

TINY = ZooSpec(attacks=("badnets",), k=2, size=32, train_samples=256, test_samples=32, epochs=1, poison_rate=0.2)


def test_plan_is_deterministic_with_targets_inside_the_gaze_range():
    spec = ZooSpec(attacks=("badnets", "wanet"), k=3)
    a, b = plan_zoo(spec), plan_zoo(spec)
    assert a == b
    assert len(a) == 3 + 2 * 3 and len({e.id for e in a}) == len(a)
    assert len({e.seed for e in a}) == len(a)
    for e in a:
        if e.backdoored:
            assert PITCH_RANGE[0] < e.target_gaze[0] < PITCH_RANGE[1]
            assert YAW_RANGE[0] < e.target_gaze[1] < YAW_RANGE[1]
    assert len({e.target_gaze for e in a if e.backdoored}) == 6


@pytest.mark.parametrize("change,needle", [
    ({"attacks": ("badnets", "nope")}, "unknown attack 'nope'"),
    ({"poison_rate": 0.0}, "poison_rate"),
    ({"poison_rate": 1.2}, "poison_rate"),
    ({"k": 0}, "k must be"),
    ({"attack_settings": {"wanet": {}}}, "not in the zoo"),
    ({"decoding": "softmax"}, "decoding must be 'direct' or 'binned'"),
    ({"benign": -1}, "benign must be within 0..99"),
    ({"benign": 100}, "benign must be within 0..99"),
    ({"benign": 0, "attacks": ()}, "would hold no model"),
])
def test_bad_zoo_settings_are_rejected(change, needle):
    with pytest.raises(ConfigError, match=needle):
        ZooSpec(**{**TINY.to_dict(), **change}).validate()


@pytest.fixture(scope="module")
def built_zoo(tmp_path_factory):
    zoo = tmp_path_factory.mktemp("zoo")
    seen = []
    manifest = build_zoo(zoo, TINY, workers=1, progress=seen.append)
    return zoo, manifest, seen


def test_zoo_builds_and_records_every_model(built_zoo):
    zoo, manifest, seen = built_zoo
    assert [p.finished for p in seen] == [0, 1, 2, 3, 4]
    assert all(e.status == "done" for e in manifest.entries)
    on_disk = json.loads((zoo / MANIFEST).read_text())
    assert len(on_disk["entries"]) == 4
    for entry in manifest.entries:
        assert (zoo / entry.model_file).is_file() and len(entry.sha256) == 64
        assert np.isfinite(entry.metrics["clean_error_deg"])
    verify_zoo(zoo)


def test_rerun_skips_finished_models(built_zoo):
    zoo, manifest, _ = built_zoo
    seen = []
    again = build_zoo(zoo, TINY, workers=1, progress=seen.append)
    assert [p.finished for p in seen] == [4]
    assert [e.sha256 for e in again.entries] == [e.sha256 for e in manifest.entries]


def test_changed_or_missing_model_files_are_caught_and_nothing_is_overwritten(built_zoo, tmp_path):
    import shutil

    zoo, _, _ = built_zoo
    copy = tmp_path / "zoo"
    shutil.copytree(zoo, copy)
    before = (copy / MANIFEST).read_bytes()
    victim = copy / ZooManifest.read(copy).entries[1].model_file
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(InputFileError, match="does not match the zoo manifest"):
        build_zoo(copy, TINY)
    victim.unlink()
    with pytest.raises(InputFileError, match="file is missing"):
        verify_zoo(copy)
    assert (copy / MANIFEST).read_bytes() == before


def test_a_different_spec_in_the_same_directory_is_refused(built_zoo):
    zoo, _, _ = built_zoo
    with pytest.raises(ConfigError, match="other settings.*epochs"):
        build_zoo(zoo, ZooSpec(**{**TINY.to_dict(), "epochs": 2}))


def test_a_zoo_grows_to_a_larger_k_keeping_its_models_and_only_when_asked(built_zoo, tmp_path):
    zoo, full, _ = built_zoo
    small = ZooSpec(**{**TINY.to_dict(), "k": 1})
    first = build_zoo(tmp_path, small)
    before = (tmp_path / MANIFEST).read_bytes()
    with pytest.raises(ConfigError, match="other settings \\(k\\); add --grow"):
        build_zoo(tmp_path, TINY)
    with pytest.raises(ConfigError, match="use another directory"):
        build_zoo(tmp_path, ZooSpec(**{**TINY.to_dict(), "epochs": 2}), grow=True)
    assert (tmp_path / MANIFEST).read_bytes() == before
    grown = build_zoo(tmp_path, TINY, grow=True)
    assert [e.id for e in grown.entries] == [e.id for e in full.entries]
    # the models already there are kept, the new ones are the ones a k=2 build trains
    assert {e.id: e.sha256 for e in first.entries}.items() <= {e.id: e.sha256 for e in grown.entries}.items()
    assert [e.sha256 for e in grown.entries] == [e.sha256 for e in full.entries]
    with pytest.raises(ConfigError, match="k=2, benign=2, more than asked: a zoo only grows"):
        build_zoo(tmp_path, small, grow=True)


def test_growing_checks_the_drawn_geometry_of_the_models_there(tmp_path):
    spec = ZooSpec(attacks=("badnets",), k=1, benign=0, size=32, train_samples=256, test_samples=32, epochs=1,
                   poison_rate=0.2, draw_geometry=True)
    first = build_zoo(tmp_path, spec)
    larger = ZooSpec(**{**spec.to_dict(), "k": 2})
    data = json.loads((tmp_path / MANIFEST).read_text())
    drawn = plan_zoo(spec)[0].settings
    assert drawn and all(data["entries"][0]["settings"][k] == v for k, v in drawn.items())
    key = sorted(drawn)[0]
    tampered = json.loads(json.dumps(data))
    tampered["entries"][0]["settings"][key] = "elsewhere"
    (tmp_path / MANIFEST).write_text(json.dumps(tampered))
    with pytest.raises(ConfigError, match="model badnets-00 is not the one the larger plan draws"):
        build_zoo(tmp_path, larger, grow=True)
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    grown = build_zoo(tmp_path, larger, grow=True)
    assert [(e.id, e.status) for e in grown.entries] == [("badnets-00", "done"), ("badnets-01", "done")]
    assert grown.entries[0].sha256 == first.entries[0].sha256


def test_interrupted_build_resumes_where_it_stopped(tmp_path):
    spec = ZooSpec(**{**TINY.to_dict(), "k": 1})

    def stop_after_first(p):
        if p.finished == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_zoo(tmp_path, spec, progress=stop_after_first)
    partial = ZooManifest.read(tmp_path)
    assert [e.status for e in partial.entries] == ["done", "pending"]
    finished = build_zoo(tmp_path, spec)
    assert [e.status for e in finished.entries] == ["done", "done"]
    assert finished.entries[0].sha256 == partial.entries[0].sha256


def test_process_pool_builds_the_same_models_as_one_process(built_zoo, tmp_path):
    zoo, manifest, _ = built_zoo
    pooled = build_zoo(tmp_path, TINY, workers=2)
    # Same seeds and data: the metrics agree (weights may differ in the last bits across thread counts).
    for a, b in zip(manifest.entries, pooled.entries, strict=True):
        assert a.id == b.id
        assert a.metrics["clean_error_deg"] == pytest.approx(b.metrics["clean_error_deg"], abs=1.0)


def test_ray_builds_a_zoo_on_a_local_instance(tmp_path):
    pytest.importorskip("ray", reason="Ray is in the 'cluster' extra")
    spec = ZooSpec(**{**TINY.to_dict(), "k": 1})
    manifest = build_zoo(tmp_path, spec, ray_address="local")
    assert [e.status for e in manifest.entries] == ["done", "done"]
    verify_zoo(tmp_path)


def test_a_binned_zoo_trains_binned_heads_and_old_manifests_read_as_direct(tmp_path):
    from securegaze.defense.model_loading import load_model_any

    spec = ZooSpec(**{**TINY.to_dict(), "attacks": (), "k": 1, "decoding": "binned"})
    manifest = build_zoo(tmp_path / "binned", spec)
    model = load_model_any(tmp_path / "binned" / manifest.entries[0].model_file)
    assert model.decoding == "binned"
    # A manifest written before the field existed has no "decoding": it was a zoo of direct heads.
    old = {k: v for k, v in TINY.to_dict().items() if k != "decoding"}
    assert ZooSpec.from_dict(old) == TINY and TINY.model_kwargs() is None


def test_first_per_attack_keeps_every_benign_model_and_the_first_backdoored_ones():
    from securegaze.zoo import first_per_attack

    entries = plan_zoo(ZooSpec(attacks=("badnets", "wanet"), k=3))
    kept = first_per_attack(entries, 2)
    assert [e.id for e in kept] == ["benign-00", "benign-01", "benign-02", "badnets-00", "badnets-01",
                                    "wanet-00", "wanet-01"]
    assert first_per_attack(entries, None) == entries
    assert [e.id for e in first_per_attack(entries, 0)] == ["benign-00", "benign-01", "benign-02"]


# --- cross-family zoos: architecture arguments, renderer style, drawn geometry and rates ----------

CROSS = ZooSpec(attacks=("badnets", "blended", "wanet", "input_aware", "sig", "tape", "glasses"), k=12,
                architecture="plain_cnn", arch_kwargs={"width": 8}, style="studio", draw_geometry=True,
                poison_rate_range={"badnets": (0.003, 0.03), "tape": (0.01, 0.06), "wanet": (0.08, 0.2)})


def test_default_spec_plans_what_zoos_before_the_cross_family_fields_planned():
    spec = ZooSpec(attacks=("badnets", "tape"), k=3, poison_rate=0.2, attack_settings={"tape": {"placement": "cheek"}})
    for a, name in enumerate(spec.attacks):
        for i in range(spec.k):
            entry = next(e for e in plan_zoo(spec) if e.id == f"{name}-{i:02d}")
            # The old plan: one generator per model for the target, fixed settings and rate.
            assert entry.target_gaze == draw_target(np.random.default_rng([spec.seed, a, i, 17]))
            assert entry.settings == spec.attack_settings.get(name, {}) and entry.poison_rate == 0.2
    assert spec.model_kwargs() is None


def test_benign_count_is_its_own_and_leaves_the_backdoored_plan_as_it_was():
    spec = ZooSpec(attacks=("badnets", "tape"), k=2, benign=5, draw_geometry=True)
    entries = plan_zoo(spec)
    benign = [e for e in entries if not e.backdoored]
    assert [e.id for e in benign] == [f"benign-{i:02d}" for i in range(5)]
    assert len({e.seed for e in entries}) == len(entries) == 5 + 2 * 2
    same_k = plan_zoo(ZooSpec(attacks=("badnets", "tape"), k=2, draw_geometry=True))
    assert [e for e in entries if e.backdoored] == [e for e in same_k if e.backdoored]
    assert benign[:2] == [e for e in same_k if not e.backdoored]
    assert ZooSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    # A spec without the field writes none: manifests from before it compare equal.
    assert "benign" not in TINY.to_dict() and spec.to_dict()["benign"] == 5
    assert [e.id for e in plan_zoo(ZooSpec(attacks=("badnets",), k=1, benign=0))] == ["badnets-00"]


def test_an_old_manifest_reads_back_as_the_same_spec(tmp_path):
    old_spec = {k: v for k, v in TINY.to_dict().items()
                if k not in ("style", "arch_kwargs", "draw_geometry", "poison_rate_range")}
    entries = [e.to_dict() for e in plan_zoo(TINY)]
    (tmp_path / MANIFEST).write_text(json.dumps({"format": 1, "spec": old_spec, "entries": entries}))
    manifest = ZooManifest.read(tmp_path)
    assert manifest.spec == TINY and plan_zoo(manifest.spec) == manifest.entries


def test_cross_family_plan_is_deterministic_and_survives_the_manifest():
    a = plan_zoo(CROSS)
    assert a == plan_zoo(CROSS)
    again = ZooSpec.from_dict(json.loads(json.dumps(CROSS.to_dict())))
    assert again == CROSS and plan_zoo(again) == a
    # Targets do not move when geometry and rates are drawn: each purpose has its own stream.
    plain = plan_zoo(ZooSpec(**{**CROSS.to_dict(), "draw_geometry": False, "poison_rate_range": {}}))
    assert [e.target_gaze for e in plain] == [e.target_gaze for e in a]
    assert CROSS.model_kwargs() == {"width": 8}
    assert CROSS.renderer_config() == synthetic_style("studio", size=64)


def test_drawn_settings_and_rates_lie_within_their_ranges():
    from securegaze.attacks import ATTACKS, create_attack
    from securegaze.data.triggers import PLACEMENTS, SIDES

    entries = [e for e in plan_zoo(CROSS) if e.backdoored]
    for entry in entries:
        s, rate = entry.settings, entry.poison_rate
        attack = create_attack(entry.attack, poison_rate=rate, **s)  # every drawn combination is valid
        assert attack.settings()["poison_rate"] == (rate or type(attack).default_poison_rate)
        if entry.attack in CROSS.poison_rate_range:
            low, high = CROSS.poison_rate_range[entry.attack]
            assert low <= rate <= high
        else:
            assert rate is None
        if entry.attack == "badnets":
            assert s["position"] == "custom" and 0.06 <= s["size_frac"] <= 0.14 and s["cells"] in (2, 3, 4)
            assert s["top_frac"] in (0.0, 1.0) or s["left_frac"] in (0.0, 1.0)  # on the border
        elif entry.attack == "tape":
            assert s["placement"] in PLACEMENTS and s["side"] in SIDES
        elif entry.attack == "glasses":
            assert 2.5 <= s["frame_mm"] <= 6.0 and 44 <= s["lens_width_mm"] <= 56
        elif entry.attack == "blended":
            assert 0.08 <= s["alpha"] <= 0.2 and s["pattern"] in ("noise", "smooth")
        elif entry.attack == "sig":
            assert 4 <= s["frequency"] <= 10 and 25 <= s["amplitude"] <= 40 and 80 <= s["test_amplitude"] <= 110
        elif entry.attack == "wanet":
            assert s["grid_size"] in (12, 16, 20) and 2.0 <= s["strength"] <= 3.0
        elif entry.attack == "input_aware":
            assert 0.03 <= s["mask_density"] <= 0.08
        assert s, f"{entry.id}: nothing drawn"
    # The draws vary: places along the border, placements, rates.
    badnets = [e for e in entries if e.attack == "badnets"]
    assert len({(e.settings["top_frac"], e.settings["left_frac"]) for e in badnets}) == len(badnets)
    assert len({e.settings["placement"] for e in entries if e.attack == "tape"}) == 3
    rates = [e.poison_rate for e in badnets]
    assert max(rates) / min(rates) > 3
    # Every attack with a measured range offers it for --draw-rates.
    assert set(measured_rate_ranges(ATTACKS.names())) >= {"badnets", "blended", "wanet", "input_aware", "sig",
                                                          "tape", "glasses"}


def test_explicit_attack_settings_win_over_drawn_ones():
    spec = ZooSpec(attacks=("tape",), k=4, draw_geometry=True, attack_settings={"tape": {"side": "left"}})
    assert {e.settings["side"] for e in plan_zoo(spec) if e.backdoored} == {"left"}


def test_badnets_custom_position_puts_the_patch_where_the_fractions_say():
    from securegaze.attacks import create_attack

    images = np.zeros((1, 64, 64, 3), np.uint8)
    for (top, left), corner in (((1.0, 1.0), "bottom_right"), ((0.0, 0.0), "top_left")):
        custom = create_attack("badnets", position="custom", top_frac=top, left_frac=left, margin_frac=0.05)
        fixed = create_attack("badnets", position=corner, margin_frac=0.05)
        assert np.array_equal(custom.apply(images), fixed.apply(images))
    _, row, col = create_attack("badnets", position="custom", top_frac=0.5, left_frac=1.0, size_frac=0.1).patch(64)
    assert (row, col) == (29, 58)  # halfway down the right edge: 0.5 x (64 - 6) = 29
    record = create_attack("badnets", position="custom", top_frac=0.5, left_frac=1.0).settings()
    assert create_attack("badnets", **record).settings() == record
    assert "top_frac" not in create_attack("badnets").settings()  # fixed positions record what they did
    with pytest.raises(ConfigError, match="needs top_frac and left_frac"):
        create_attack("badnets", position="custom")
    with pytest.raises(ConfigError, match="only place a position 'custom' patch"):
        create_attack("badnets", position="top_left", top_frac=0.2)
    with pytest.raises(ConfigError, match="adaptive: .*top_frac"):
        create_attack("adaptive", position="custom", top_frac=1.5, left_frac=0.0)


@pytest.mark.parametrize("change,needle", [
    ({"style": "cartoon"}, "unknown renderer style 'cartoon'"),
    ({"architecture": "vgg"}, "unknown model 'vgg'"),
    ({"arch_kwargs": {"decoding": "binned"}}, "arch_kwargs must not set decoding"),
    ({"arch_kwargs": {"depth": 3}}, "does not take arch_kwargs"),
    ({"poison_rate_range": {"wanet": (0.1, 0.2)}}, "names attacks not in the zoo"),
    ({"poison_rate_range": {"badnets": (0.2, 0.1)}}, "0 < low <= high < 1"),
    ({"poison_rate_range": {"badnets": 0.1}}, "must be \\(low, high\\)"),
    ({"poison_rate_range": {"badnets": (0.6, 0.9)}, "attacks": ("wanet",)}, "names attacks not in the zoo"),
])
def test_bad_cross_family_settings_are_rejected(change, needle):
    with pytest.raises(ConfigError, match=needle):
        ZooSpec(**{**TINY.to_dict(), **change}).validate()


def test_a_drawn_rate_the_attack_refuses_names_the_model():
    spec = ZooSpec(attacks=("wanet",), k=1, poison_rate_range={"wanet": (0.8, 0.9)})
    with pytest.raises(ConfigError, match="zoo model wanet-00: wanet: poison_rate x"):
        plan_zoo(spec)


def test_a_tiny_cross_family_zoo_builds_in_its_style(tmp_path):
    from securegaze.attacks.runner import load_attack_run, render_splits
    from securegaze.defense.model_loading import load_model_any

    spec = ZooSpec(attacks=("badnets", "tape"), k=1, size=32, train_samples=128, test_samples=16, epochs=1,
                   architecture="plain_cnn", arch_kwargs={"width": 8, "downsample": "stride"}, style="studio",
                   draw_geometry=True, poison_rate_range={"badnets": (0.05, 0.1), "tape": (0.05, 0.1)})
    manifest = build_zoo(tmp_path, spec)
    assert ZooManifest.read(tmp_path).spec == spec and all(e.status == "done" for e in manifest.entries)
    model = load_model_any(tmp_path / manifest.entries[0].model_file)
    assert model.config()["architecture"] == "plain_cnn" and model.config()["width"] == 8
    badnets = manifest.entries[1]
    planned = plan_zoo(spec)[1]
    # Everything drawn is in the entry: its settings are the attack's full settings, drawn ones kept.
    assert badnets.poison_rate == planned.poison_rate and planned.settings.items() <= badnets.settings.items()
    record = json.loads((tmp_path / badnets.id / "attack.json").read_text())
    assert record["data"]["style"] == "studio" and record["settings"] == badnets.settings
    # The run's test faces come back in the zoo's style.
    _, test_set, _ = load_attack_run(tmp_path / badnets.id)
    want = render_splits(32, 128, 16, badnets.seed, "studio").test
    assert np.array_equal(test_set.images, want.images)


def test_zoo_build_command_takes_the_cross_family_options(tmp_path, capsys):
    from securegaze.cli import main

    out = tmp_path / "zoo"
    code = main(["zoo", "build", "--out", str(out), "--k", "1", "--attacks", "tape", "--size", "32",
                 "--train-samples", "128", "--test-samples", "16", "--epochs", "1", "--arch", "plain_cnn",
                 "--width", "8", "--arch-set", "downsample=stride", "--style", "studio", "--draw-geometry",
                 "--draw-rates", "--benign", "0"])
    assert code == 0, capsys.readouterr().err
    spec = ZooManifest.read(out).spec
    assert (spec.architecture, spec.arch_kwargs, spec.style, spec.draw_geometry) == (
        "plain_cnn", {"width": 8, "downsample": "stride"}, "studio", True)
    assert spec.poison_rate_range == measured_rate_ranges(["tape"])
    assert spec.benign == 0 and [e.id for e in ZooManifest.read(out).entries] == ["tape-00"]
    # the same command with one benign model more: refused without --grow, grown with it
    more = ["zoo", "build", "--out", str(out), "--k", "1", "--attacks", "tape", "--size", "32",
            "--train-samples", "128", "--test-samples", "16", "--epochs", "1", "--arch", "plain_cnn",
            "--width", "8", "--arch-set", "downsample=stride", "--style", "studio", "--draw-geometry",
            "--draw-rates", "--benign", "1"]
    assert main(more) == 2 and "add --grow" in capsys.readouterr().err.replace("\n", " ")
    assert main([*more, "--grow"]) == 0, capsys.readouterr().err
    assert [e.id for e in ZooManifest.read(out).entries] == ["benign-00", "tape-00"]
    # --cpu-sized starts from the CPU preset, --width wins over it.
    code = main(["zoo", "build", "--out", str(tmp_path / "resnet"), "--k", "1", "--attacks", "", "--size", "32",
                 "--train-samples", "128", "--test-samples", "8", "--epochs", "1", "--arch", "resnet18",
                 "--cpu-sized", "--width", "4"])
    assert code == 0, capsys.readouterr().err
    assert ZooManifest.read(tmp_path / "resnet").spec.arch_kwargs == {"width": 4, "stem": "compact"}
    for args, needle in ((["--rate-range", "tape=0.1"], "ATTACK=LOW,HIGH"),
                         (["--arch-set", "stem"], "--arch-set"),
                         (["--arch", "mobilenet_v3", "--width", "8"], "does not take arch_kwargs")):
        code = main(["zoo", "build", "--out", str(tmp_path / "bad"), "--attacks", "tape", *args])
        captured = capsys.readouterr()
        assert code == 2 and needle in (captured.err + captured.out).replace("\n", " "), (args, captured.err)



def _state(pid: int) -> str | None:
    """The process's state letter from /proc (None when it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _spawned_workers(pid: int) -> set[int]:
    """Live multiprocessing children of ``pid`` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in cmdline:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the workers' parent-death signal is Linux's")
def test_killing_a_pooled_build_stops_its_training_workers(tmp_path):
    """A build stopped from outside (here SIGKILL, which no handler sees) takes its pool with it:
    no orphaned worker goes on training and sharing the cores."""
    spec = json.dumps({**TINY.to_dict(), "train_samples": 3000, "epochs": 40})
    script = ("import json\nfrom securegaze.zoo import ZooSpec, build_zoo\n"
              f"build_zoo({str(tmp_path)!r}, ZooSpec.from_dict(json.loads({spec!r})), workers=2)\n")
    build = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline, workers = time.monotonic() + 120, set()
        while time.monotonic() < deadline and build.poll() is None and len(workers) < 2:
            workers = _spawned_workers(build.pid)
            time.sleep(0.5)
        assert len(workers) == 2, "the build never started its two workers"
        time.sleep(8)  # past the workers' start-up, into training
        build.kill()
        build.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_state(p) not in (None, "Z") for p in workers):
            time.sleep(0.5)
        alive = [p for p in workers if _state(p) not in (None, "Z")]
        assert not alive, f"training workers {alive} outlived their build"
    finally:
        if build.poll() is None:
            build.kill()
        for pid in workers:  # a failing run leaves nothing behind either
            if _state(pid) not in (None, "Z"):
                os.kill(pid, signal.SIGKILL)
