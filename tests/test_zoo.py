"""The zoo builder at CI size: tiny 32-px models, real training, real process pool and Ray."""

import json

import numpy as np
import pytest

from securegaze.errors import ConfigError, InputFileError
from securegaze.geometry import PITCH_RANGE, YAW_RANGE
from securegaze.zoo import MANIFEST, ZooManifest, ZooSpec, build_zoo, plan_zoo, verify_zoo

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
