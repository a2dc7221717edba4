"""The cross-family benchmark's decisions: leave-one-family-out thresholds, pooled figures, left-out models."""

import json
import math

import pytest

from securegaze.bench.calibration import calibrate_threshold
from securegaze.bench.cross_family import (
    MIN_ASR,
    ScoredModel,
    cross_family_markdown,
    evaluate_families,
    family_of,
    scorable_models,
    zoo_cache_tags,
)
from securegaze.bench.detection import ModelScore
from securegaze.zoo import ZooEntry, ZooManifest, ZooSpec


def _model(family, i, attack, score, asr=None, rate=None, error=None):
    s = ModelScore(id=f"{attack}-{i:02d}", zoo=family, attack=attack, backdoored=attack != "benign", score=score,
                   verdict="", runtime_s=10.0 + i, collapsed_share=0.7, target_error_deg=2.0 if attack != "benign" else None,
                   constraints_met=math.isfinite(score), report_path="")
    return ScoredModel(family, s, asr, rate, error)


def _zoo(family, benign, backdoored, attack="badnets", asr=0.9):
    return ([_model(family, i, "benign", s) for i, s in enumerate(benign)]
            + [_model(family, i, attack, s, asr, 0.02) for i, s in enumerate(backdoored)])


def test_each_family_is_judged_by_a_threshold_from_the_other_families_only():
    a = _zoo("a", [0.5, 0.6, 0.7], [0.02, 0.03])
    b = _zoo("b", [0.3, 0.4, 0.45], [0.01, 0.25])
    c = _zoo("c", [0.8, 0.9, 1.0], [0.05, 0.04], attack="tape")
    results = evaluate_families(a + b + c, default_threshold=0.1)
    lofo = {f.family: f for f in results.families if f.decision == "lofo"}
    default = {f.family: f for f in results.families if f.decision == "default"}
    assert lofo["a"].threshold == pytest.approx(calibrate_threshold([0.3, 0.4, 0.45, 0.8, 0.9, 1.0]))
    assert lofo["b"].threshold == pytest.approx(calibrate_threshold([0.5, 0.6, 0.7, 0.8, 0.9, 1.0]))
    assert lofo["a"].calibrated_on == 6 and default["a"].calibrated_on == 0 and default["a"].threshold == 0.1
    # Family b's backdoored 0.25 sits above the default threshold and below its LOFO threshold.
    assert default["b"].overall.tpr == 0.5 and lofo["b"].threshold > 0.25 and lofo["b"].overall.tpr == 1.0
    assert [g.name for g in default["c"].per_attack] == ["tape"]
    pooled = results.pooled["default"]
    assert (pooled.backdoored, pooled.benign, pooled.tpr, pooled.fpr) == (6, 9, 5 / 6, 0.0)
    # Every backdoored score lies below every benign one, whatever family: the ranking is perfect even
    # where a threshold misses.
    assert results.pooled_auroc == 1.0
    assert evaluate_families(a + b + _zoo("d", [0.2, 0.3, 0.3], [0.35]), 0.1).pooled_auroc < 1.0
    json.dumps(results.to_dict())


def test_attacks_that_did_not_take_are_listed_not_scored_and_small_pools_fall_back():
    a = _zoo("a", [0.5, 0.6, 0.7], [0.02]) + [_model("a", 5, "sig", 0.9, asr=MIN_ASR - 0.1)]
    b = _zoo("b", [0.3, math.inf], [0.01])
    results = evaluate_families(a + b, default_threshold=0.1)
    scored = {f.family: f.overall.backdoored for f in results.families if f.decision == "default"}
    assert scored == {"a": 1, "b": 1}  # the sig model whose attack failed is left out
    assert any("sig-05" in n and "did not take" in n for n in results.notes)
    # A model that never learnt gaze (it answers about the mean gaze) is no benign model to judge by.
    dead = evaluate_families(a + b + [_model("b", 7, "benign", 0.001, error=26.7)], default_threshold=0.1)
    assert {f.family: f.overall.benign for f in dead.families if f.decision == "default"} == {"a": 3, "b": 2}
    assert any("benign-07: clean error 26.7 deg, above 15: the model did not learn gaze; left out" in n
               for n in dead.notes)
    lofo = {f.family: f for f in results.families if f.decision == "lofo"}
    # b's own benign models are not a's calibration: a has only 1 finite other-family benign score.
    assert lofo["a"].calibrated_on == 0 and lofo["a"].threshold == 0.1
    assert any(n.startswith("a:") and "default threshold" in n for n in results.notes)
    assert lofo["b"].calibrated_on == 3
    table = cross_family_markdown(results, "python benchmarks/cross_family.py --zoo A --zoo B")
    assert "| **pooled** | lofo |" in table and "| a | sig-05 | sig |" in table and "## Notes" in table


def test_a_family_is_named_by_architecture_arguments_style_and_size():
    spec = ZooSpec(architecture="resnet18", arch_kwargs={"width": 16, "stem": "compact"}, style="studio")
    assert family_of(spec) == "resnet18[stem=compact,width=16]/studio/64px"
    assert family_of(ZooSpec()) == "small_cnn/standard/64px"


def test_zoos_with_the_same_folder_name_get_their_own_scan_folders(tmp_path):
    """Two zoos named runs/a/plain and runs/b/plain must not overwrite each other's cached reports."""
    first, second, other = tmp_path / "a" / "plain", tmp_path / "b" / "plain", tmp_path / "a" / "mobile"
    assert zoo_cache_tags([first, other]) == {first: "", other: ""}
    assert zoo_cache_tags([first, second, other]) == {first: "a", second: "b", other: ""}
    third = tmp_path / "c" / "a" / "plain"
    tags = zoo_cache_tags([first, second, third])
    assert len({f"plain-{t}" for t in tags.values()}) == 3


def test_research_scripts_get_the_finished_models_whose_attack_took(tmp_path):
    spec = ZooSpec(attacks=("badnets",), k=1, size=32, test_samples=8)
    entries = [
        ZooEntry("benign-00", "benign", 1, None, None, {}, status="done", model_file="benign-00/model.safetensors"),
        ZooEntry("badnets-00", "badnets", 2, (0.1, 0.2), 0.1, {}, status="done", metrics={"asr": 0.9}),
        ZooEntry("badnets-01", "badnets", 3, (0.1, 0.2), 0.1, {}, status="done", metrics={"asr": MIN_ASR - 0.01}),
        ZooEntry("badnets-02", "badnets", 4, (0.1, 0.2), 0.1, {}),  # still pending
    ]
    ZooManifest(spec, entries).write(tmp_path)
    manifest, chosen, x = scorable_models(tmp_path, samples=5)
    assert manifest.spec == spec and [e.id for e in chosen] == ["benign-00", "badnets-00"]
    assert tuple(x.shape) == (5, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert [e.id for e in scorable_models(tmp_path, models=" badnets-00,badnets-01", samples=2)[1]] == ["badnets-00"]


def test_the_benchmark_rewrites_only_its_generated_section_of_the_page(tmp_path):
    from securegaze.errors import InputFileError
    from securegaze.io import write_generated_section

    page = tmp_path / "page.md"
    write_generated_section(page, "# Tables\n\nfirst figures\n", "bench")
    page.write_text(page.read_text() + "\n## Written after run 1\n\nWhat it shows.\n")
    write_generated_section(page, "# Tables\n\nrun 2\n", "bench")
    text = page.read_text()
    assert "run 2" in text and "first figures" not in text and text.endswith("## Written after run 1\n\nWhat it shows.\n")
    assert text.startswith("<!-- begin generated: bench -->\n# Tables")
    # A page written by hand gets the section above what it held.
    hand = tmp_path / "hand.md"
    hand.write_text("Notes by hand.\n")
    write_generated_section(hand, "tables", "bench")
    assert hand.read_text().endswith("<!-- end generated: bench -->\n\nNotes by hand.\n")
    broken = tmp_path / "broken.md"
    broken.write_text("<!-- begin generated: bench -->\nhalf\n")
    with pytest.raises(InputFileError, match="broken.md: the generated section 'bench' has only one"):
        write_generated_section(broken, "tables", "bench")
    assert broken.read_text() == "<!-- begin generated: bench -->\nhalf\n"
