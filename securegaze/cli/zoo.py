"""``securegaze zoo build`` and ``securegaze zoo verify``: benign and backdoored models for the benchmarks."""

from __future__ import annotations

from pathlib import Path

import typer

from securegaze.cli.support import console, progress_bar

zoo_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Build and check model zoos.")


@zoo_app.command("build")
def zoo_build(
    out: Path = typer.Option(..., "--out", help="Zoo directory (resumable: re-run to continue)."),
    k: int = typer.Option(5, help="Benign models, and backdoored models per attack."),
    attacks: str = typer.Option("all", help="Comma-separated attack names, or 'all' (the seven standard attacks; "
                                "name the hard cases 'adaptive' and 'offset' to add them)."),
    size: int = typer.Option(64),
    train_samples: int = typer.Option(20000),
    test_samples: int = typer.Option(1000),
    epochs: int = typer.Option(4),
    rate: float | None = typer.Option(None, help="Poison rate for every attack (default: each attack's own)."),
    seed: int = typer.Option(0),
    decoding: str = typer.Option("direct", help="Output head of every model: direct regression or binned (L2CS-style)."),
    workers: int = typer.Option(1, help="Local worker processes."),
    ray: str | None = typer.Option(None, "--ray", help="Ray cluster address ('local' starts one here)."),
) -> None:
    """Train K benign and K backdoored models per attack, recording them in OUT/zoo.json."""
    from securegaze.zoo import ZooSpec, build_zoo, zoo_attack_names

    spec = ZooSpec(attacks=zoo_attack_names(attacks), k=k, size=size, train_samples=train_samples,
                   test_samples=test_samples, epochs=epochs, poison_rate=rate, seed=seed, decoding=decoding)
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

        manifest = build_zoo(out, spec, workers=workers, ray_address=ray, progress=on_progress)
    console.print(f"zoo complete: {len(manifest.entries)} models in {out}")


@zoo_app.command("verify")
def zoo_verify(zoo: Path = typer.Argument(..., help="Zoo directory.")) -> None:
    """Check every finished model's file against the zoo manifest (exists, same sha256)."""
    from securegaze.zoo import verify_zoo

    manifest = verify_zoo(zoo)
    done = manifest.done()
    console.print(f"{zoo}: {len(done)} of {len(manifest.entries)} models finished, all files match the manifest")
