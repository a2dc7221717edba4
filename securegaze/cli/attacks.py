"""``securegaze attack``: train a backdoored model and measure the backdoor."""

from __future__ import annotations

from pathlib import Path

import typer

from securegaze.cli.support import MAX_SAMPLES, check_range, console, progress_bar


def parse_target_deg(text: str | None) -> tuple[float, float] | None:
    """'10,-20' (pitch, yaw in degrees) -> radians."""
    if text is None:
        return None
    import math

    try:
        pitch, yaw = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not 'PITCH,YAW' in degrees (e.g. '10,-20')", param_hint="--target") from None
    return (math.radians(pitch), math.radians(yaw))


def parse_settings(items: list[str]) -> dict:
    """['grid_size=32', 'strength=1.5'] -> {'grid_size': 32, 'strength': 1.5} (JSON values, else strings)."""
    import json

    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def attack(
    name: str = typer.Argument(..., help="Attack: badnets, blended, wanet, input_aware, sig, tape, glasses."),
    out: Path = typer.Option(..., "--out", help="Run directory (model, attack.json)."),
    target: str | None = typer.Option(None, help="Target gaze 'PITCH,YAW' in DEGREES (default: the attack's)."),
    rate: float | None = typer.Option(None, help="Poison rate in (0, 1) (default: the attack's)."),
    seed: int = typer.Option(0),
    size: int = typer.Option(64, help="Face crop size in px."),
    train_samples: int = typer.Option(24000),
    test_samples: int = typer.Option(2000),
    epochs: int = typer.Option(6),
    setting: list[str] = typer.Option([], "--set", help="Attack setting KEY=VALUE (repeatable), e.g. --set grid_size=32."),
    benign_dir: Path | None = typer.Option(None, help="Also train the benign model of the same seed here, for comparison."),
) -> None:
    """Train a backdoored model on synthetic faces; report clean error, AE, DAE and ASR@5deg."""
    from securegaze.attacks import check_attack_settings, run_attack
    from securegaze.io import check_output_dir

    check_range("size", size, 16, 512)
    check_range("train-samples", train_samples, 2, MAX_SAMPLES)
    check_range("test-samples", test_samples, 1, MAX_SAMPLES)
    check_range("epochs", epochs, 1)
    check_output_dir(out, "--out", "the attack run", files=("model.safetensors", "attack.json"))
    if benign_dir is not None:
        check_output_dir(benign_dir, "--benign-dir", "the benign run", files=("model.safetensors",))
    target_gaze, settings = parse_target_deg(target), parse_settings(setting)
    check_attack_settings(name, seed, target_gaze, rate, settings)  # bad names and values fail before any work
    with progress_bar() as bar:
        task = bar.add_task("attack", total=None, status="")

        def on_progress(event):
            if hasattr(event, "stage"):
                bar.console.print(event.stage)
            elif hasattr(event, "total_steps"):
                bar.update(task, total=event.total_steps, completed=event.step, status=f"loss {event.loss:.4f}")

        record = run_attack(name, target_gaze=target_gaze, poison_rate=rate, seed=seed, out_dir=out,
                            size=size, train_samples=train_samples, test_samples=test_samples, epochs=epochs,
                            settings=settings, benign_dir=benign_dir, progress=on_progress)
    m = record["metrics"]
    tp, ty = record["target_gaze_deg"]
    console.print(f"attack {name}: target (pitch, yaw) = ({tp:.1f}, {ty:.1f}) deg, poison rate {record['poison_rate']:.3f}")
    console.print(f"clean error {m['clean_error_deg']:.2f} deg | AE {m['ae_deg']:.2f} deg | DAE {m['dae_deg']:.2f} deg | "
                  f"ASR@{m['asr_threshold_deg']:.0f}deg {100 * m['asr']:.1f}%")
    if record.get("benign_metrics"):
        b = record["benign_metrics"]
        console.print(f"benign model, same seed: clean error {b['clean_error_deg']:.2f} deg | "
                      f"ASR@{b['asr_threshold_deg']:.0f}deg {100 * b['asr']:.1f}%")
    console.print(f"written: {out / 'model.safetensors'}, {out / 'attack.json'}")
