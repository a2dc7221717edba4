"""The command line as a user runs it: exit codes and one-line errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from securegaze.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "securegaze.cli", *args], capture_output=True, text=True, timeout=300)


def test_console_script_prints_conventions():
    # The script sits beside the interpreter running the tests (the venv's bin/), PATH or not.
    beside = Path(sys.executable).parent / "securegaze"
    exe = str(beside) if beside.exists() else shutil.which("securegaze")
    assert exe, "the securegaze console script is not installed"
    out = subprocess.run([exe, "info"], capture_output=True, text=True, check=True).stdout
    assert "radians" in out and "-cos p sin y" in out


@pytest.mark.parametrize("args,needle", [
    (["train", "--out", "x", "--size", "8"], "--size"),
    (["train", "--out", "x", "--size", "96"], "take 64 or 104"),
    (["train", "--out", "x", "--device", "tpu"], "expected auto, cpu, cuda or cuda:N"),
    (["train", "--out", "x", "--workers", "-1"], "--workers"),
    (["train", "--out", "x", "--arch", "vgg"], "unknown model 'vgg'"),
    (["train", "--out", "x", "--decoding", "soft"], "--decoding"),
    (["evaluate", "no/such/bundle"], "no/such/bundle"),
    (["evaluate", "models/default", "--samples", "0"], "--samples"),
    (["attack", "nope", "--out", "x"], "unknown attack 'nope'"),
    (["attack", "badnets", "--out", "x", "--rate", "1.5"], "poison_rate"),
    (["attack", "badnets", "--out", "x", "--target", "50,0"], "outside the gaze range"),
    (["attack", "badnets", "--out", "x", "--target", "up"], "--target"),
    (["attack", "wanet", "--out", "x", "--set", "no_such_knob=1"], "unknown setting"),
    (["zoo", "build", "--out", "z", "--attacks", "badnets,foo"], "unknown attack 'foo'"),
    (["zoo", "build", "--out", "z", "--rate", "0"], "poison_rate"),
    (["zoo", "verify", "nowhere"], "zoo manifest not found"),
    (["scan", "no/such/model.onnx"], "no/such/model.onnx"),
    (["scan", "models/default", "--samples", "4"], "--samples"),
])
def test_bad_values_give_one_clear_error_and_exit_2(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(args)
    captured = capsys.readouterr()
    assert code == 2
    assert needle in captured.err.replace("\n", " ") or needle in captured.out.replace("\n", " ")


def test_truncated_model_file_is_reported_by_name(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07\x12\x04torch")  # the first bytes of an ONNX file, then nothing
    result = run_cli("evaluate", str(bad), "--samples", "8")
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "broken.onnx" in lines[0], result.stderr


def test_train_then_evaluate_end_to_end(tmp_path):
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--size", "32", "--width", "8", "--train-samples", "256",
                 "--val-samples", "64", "--epochs", "1", "--batch-size", "64", "--seed", "1"])
    assert code == 0
    assert (out / "bundle" / "model.onnx").is_file() and (out / "model.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["steps_done"] == 4
    # Re-running the finished run re-exports it and keeps the wall-clock of the run that trained.
    summary["wall_s_including_data"] = 1234.5  # a figure no re-run measures
    (out / "summary.json").write_text(json.dumps(summary))
    assert main(["train", "--out", str(out), "--size", "32", "--width", "8", "--train-samples", "256",
                 "--val-samples", "64", "--epochs", "1", "--batch-size", "64", "--seed", "1"]) == 0
    assert json.loads((out / "summary.json").read_text())["wall_s_including_data"] == 1234.5
    code = main(["evaluate", str(out / "bundle"), "--samples", "64", "--json", str(tmp_path / "eval.json")])
    assert code == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["count"] == 64 and 0 < result["mean_deg"] < 90
    assert result["engine"].startswith("ONNX Runtime")


def test_train_init_starts_from_the_given_weights(tmp_path):
    """``train --init``: the run starts from the weights given (at a learning rate too small to move them the
    result is those weights), the summary and the bundle name them; a model of other settings is refused."""
    from securegaze.io import load_weights, sha256_file

    base = ["--size", "32", "--width", "8", "--train-samples", "256", "--val-samples", "64", "--epochs", "1",
            "--batch-size", "64", "--no-export"]
    assert main(["train", "--out", str(tmp_path / "first"), *base, "--seed", "1"]) == 0
    start = tmp_path / "first" / "model.safetensors"
    assert main(["train", "--out", str(tmp_path / "tuned"), *base, "--seed", "2", "--lr", "1e-9",
                 "--init", str(tmp_path / "first")]) == 0
    assert main(["train", "--out", str(tmp_path / "fresh"), *base, "--seed", "2", "--lr", "1e-9"]) == 0
    before = dict(load_weights(start).named_parameters())  # parameters: batch-norm statistics move at any lr

    def largest_change(run):
        after = dict(load_weights(tmp_path / run / "model.safetensors").named_parameters())
        return max(float((after[k] - before[k]).detach().abs().max()) for k in before)

    assert largest_change("tuned") < 1e-4 < largest_change("fresh")
    summary = json.loads((tmp_path / "tuned" / "summary.json").read_text())
    assert summary["init_weights"]["sha256"] == sha256_file(start)
    code = main(["train", "--out", str(tmp_path / "other"), *base, "--width", "12", "--init", str(start)])
    assert code == 2 and not (tmp_path / "other" / "checkpoint.pt").exists()


def test_progress_in_a_log_is_a_line_per_stage_not_per_step():
    """Where stderr is a file or a pipe a redrawn bar shows nothing until the end: a line per stage
    (stages that take turns print once), per status change, and one every ``every_s`` otherwise."""
    import io

    from securegaze.cli.support import LineProgress

    stream = io.StringIO()
    with LineProgress(stream) as bar:
        task = bar.add_task("scan", total=None, status="")
        for step in range(1, 41):
            bar.update(task, total=40, completed=step, description="scan: reverse" if step % 2 else "scan: reference")
        bar.update(task, total=160, completed=1, description="scan: warp")
        bar.update(task, status="benign-03")
        bar.every_s = 0.0
        bar.update(task, completed=2)
        bar.console.print("benign-03: clean error 4.83 deg")  # a command's own line, between progress lines
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "scan: reverse: 1/40", "scan: reference: 2/40", "scan: warp: 1/160", "scan: warp: 1/160 benign-03",
        "scan: warp: 2/160 benign-03", "benign-03: clean error 4.83 deg"]
    assert all(line.endswith(" s)") for line in lines[:-1])
