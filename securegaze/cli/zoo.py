"""``securegaze zoo build`` and ``securegaze zoo verify``: benign and backdoored models for the benchmarks."""

from __future__ import annotations

from pathlib import Path

import typer

from securegaze.cli.support import MAX_SAMPLES, check_range, console, progress_bar

zoo_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Build and check model zoos.")


@zoo_app.command("build")
def zoo_build(
    out: Path = typer.Option(..., "--out", help="Zoo directory (resumable: re-run to continue)."),
    k: int = typer.Option(5, help="Backdoored models per attack, and benign models unless --benign says."),
    benign: int | None = typer.Option(None, help="Benign models (default: K), e.g. 10 benign beside K=2 of each "
                                      "of five attacks."),
    attacks: str = typer.Option("all", help="Comma-separated attack names, or 'all' (the seven standard attacks; "
                                "name the hard cases 'adaptive' and 'offset' to add them)."),
    size: int = typer.Option(64),
    train_samples: int = typer.Option(20000),
    test_samples: int = typer.Option(1000),
    epochs: int = typer.Option(4),
    rate: float | None = typer.Option(None, help="Poison rate for every attack (default: each attack's own)."),
    seed: int = typer.Option(0),
    decoding: str = typer.Option("direct", help="Output head of every model: direct regression or binned (L2CS-style)."),
    arch: str = typer.Option("small_cnn", help="Architecture of every model (small_cnn, plain_cnn, resnet18, mobilenet_v3)."),
    width: int | None = typer.Option(None, help="The architecture's width: first-layer channels (small_cnn, plain_cnn) "
                                     "or base channels (resnet18). Default: the architecture's own."),
    arch_set: list[str] = typer.Option([], "--arch-set", help="Other architecture argument KEY=VALUE (repeatable), "
                                       "e.g. --arch-set stem=compact, --arch-set width_mult=0.5."),
    cpu_sized: bool = typer.Option(False, "--cpu-sized", help="Start from the architecture's CPU-sized 64-px "
                                   "arguments (securegaze.models.CPU_SIZED); --width and --arch-set win."),
    style: str = typer.Option("standard", help="Renderer style of the faces (standard, studio)."),
    draw_geometry: bool = typer.Option(False, "--draw-geometry", help="Draw each backdoored model's trigger "
                                       "geometry (place, size, strength) from the attack's ranges."),
    draw_rates: bool = typer.Option(False, "--draw-rates", help="Draw each backdoored model's poison rate from "
                                    "its attack's measured range (ASR@5 deg from partial to full)."),
    rate_range: list[str] = typer.Option([], "--rate-range", help="ATTACK=LOW,HIGH (repeatable): draw that "
                                         "attack's rates log-uniformly in [LOW, HIGH]; wins over --draw-rates."),
    workers: int = typer.Option(1, help="Local worker processes."),
    ray: str | None = typer.Option(None, "--ray", help="Ray cluster address ('local' starts one here)."),
    grow: bool = typer.Option(False, "--grow", help="OUT holds a zoo of the same recipe with a smaller --k or "
                              "--benign: keep its models and train the extra ones."),
) -> None:
    """Train benign models and K backdoored models per attack, recording them in OUT/zoo.json."""
    from securegaze.cli.attacks import parse_settings
    from securegaze.cli.models import MAX_WIDTH
    from securegaze.io import check_output_dir
    from securegaze.models import CPU_SIZED
    from securegaze.zoo import ZooSpec, build_zoo, measured_rate_ranges, zoo_attack_names

    check_range("train-samples", train_samples, 2, MAX_SAMPLES)
    check_range("test-samples", test_samples, 1, MAX_SAMPLES)
    if width is not None:
        check_range("width", width, 1, MAX_WIDTH)
    check_output_dir(out, "--out", "the zoo", files=("zoo.json",))
    names = zoo_attack_names(attacks)
    arch_kwargs = dict(CPU_SIZED.get(arch, {})) if cpu_sized else {}
    if width is not None:
        arch_kwargs["width"] = width
    try:
        arch_kwargs.update(parse_settings(arch_set))
    except typer.BadParameter as exc:
        raise typer.BadParameter(exc.message, param_hint="--arch-set") from None
    ranges = measured_rate_ranges(names) if draw_rates else {}
    ranges.update(_parse_rate_ranges(rate_range))
    spec = ZooSpec(attacks=names, k=k, benign=benign, size=size, train_samples=train_samples, test_samples=test_samples,
                   epochs=epochs, poison_rate=rate, seed=seed, decoding=decoding, architecture=arch,
                   style=style, arch_kwargs=arch_kwargs, draw_geometry=draw_geometry, poison_rate_range=ranges)
    spec.validate()
    if workers < 1:
        raise typer.BadParameter(f"{workers} is not >= 1", param_hint="--workers")
    with progress_bar() as bar:
        task = bar.add_task("zoo", total=None, status="")

        def on_progress(p):
            bar.update(task, total=p.total, completed=p.finished, status=p.last.id if p.last else "")
            if p.last:
                m = p.last.metrics
                extra = f", ASR {100 * m['asr']:.0f}%" if "asr" in m else ""
                bar.console.print(f"{p.last.id}: clean error {m['clean_error_deg']:.2f} deg{extra} ({p.last.train_s:.0f} s)")

        manifest = build_zoo(out, spec, workers=workers, ray_address=ray, progress=on_progress, grow=grow)
    console.print(f"zoo complete: {len(manifest.entries)} models in {out}")


def _parse_rate_ranges(items: list[str]) -> dict[str, tuple[float, float]]:
    """['badnets=0.005,0.03'] -> {'badnets': (0.005, 0.03)}; the values are checked by ZooSpec.validate."""
    ranges = {}
    for item in items:
        name, sep, bounds = item.partition("=")
        try:
            low, high = (float(v) for v in bounds.split(","))
        except ValueError:
            low = high = None
        if not sep or not name or low is None:
            raise typer.BadParameter(f"{item!r} is not ATTACK=LOW,HIGH (e.g. badnets=0.005,0.03)",
                                     param_hint="--rate-range")
        ranges[name] = (low, high)
    return ranges


@zoo_app.command("verify")
def zoo_verify(zoo: Path = typer.Argument(..., help="Zoo directory.")) -> None:
    """Check every finished model's file against the zoo manifest (exists, same sha256)."""
    from securegaze.zoo import verify_zoo

    manifest = verify_zoo(zoo)
    done = manifest.done()
    console.print(f"{zoo}: {len(done)} of {len(manifest.entries)} models finished, all files match the manifest")
