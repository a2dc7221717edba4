"""One backdoor experiment on synthetic faces, end to end: what ``securegaze attack`` runs.

:func:`run_attack` renders a training and a test split (different dataset seeds, so different
identities), keeps their :class:`~securegaze.data.synthetic.FaceParams` so physical triggers can be
rendered on the same faces, trains the backdoored model, measures it
(:func:`~securegaze.attacks.metrics.evaluate_attack`) and writes::

    out_dir/model.safetensors     the backdoored gaze model (safetensors, no pickle)
    out_dir/generator.safetensors the trigger generator (input_aware only; needed to apply it)
    out_dir/attack.json           attack name, settings, target, rate, seed, data, metrics (atomic)
    out_dir/recipe.json, summary.json, checkpoint.pt   (resume bookkeeping)

With ``benign_dir`` it also trains (or reuses) a benign model with the same seed, data and budget and
measures it against the same trigger, for comparison. Library code prints nothing: progress goes to
the ``progress`` callback as :class:`RunStage`, ``TrainProgress`` or ``MaskProgress`` events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from securegaze.data.base import ArrayGazeDataset
from securegaze.errors import ConfigError
from securegaze.geometry import CONVENTION
from securegaze.io import atomic_write_json, read_json
from securegaze.json_codec import to_json

#: Defaults of one run: the strength benchmark's recipe (docs/attack_strength.md), sized so that the
#: benign model and seven attacks train within ~25 minutes on 2 CPU cores.
DEFAULT_TRAIN_SAMPLES = 24_000
DEFAULT_TEST_SAMPLES = 2_000
DEFAULT_EPOCHS = 6


@dataclass(frozen=True)
class RunStage:
    """A progress event between training steps: which stage of the run starts now."""

    stage: str


@dataclass(frozen=True)
class SyntheticSplits:
    """Rendered training and test faces with the parameters that drew them.

    ``train`` / ``test``: (N, S, S, 3) uint8 RGB with (N, 2) radian labels; ``*_faces``: their
    FaceParams (for rendering physical triggers on the same faces). Training faces come from dataset
    seed ``2 * seed``, test faces from ``2 * seed + 1``: no identity is shared. ``style``: the
    renderer style (:data:`securegaze.data.synthetic.STYLES`) that drew them.
    """

    train: ArrayGazeDataset
    train_faces: object
    test: ArrayGazeDataset
    test_faces: object
    size: int
    seed: int
    style: str = "standard"

    def describe(self) -> dict:
        described = {"size": self.size, "train_samples": len(self.train), "test_samples": len(self.test),
                     "seed": self.seed, "train_dataset_seed": 2 * self.seed, "test_dataset_seed": 2 * self.seed + 1}
        if self.style != "standard":  # only then: records and resume recipes of standard runs stay as they were
            described["style"] = self.style
        return described


def render_splits(size: int = 64, train_samples: int = DEFAULT_TRAIN_SAMPLES,
                  test_samples: int = DEFAULT_TEST_SAMPLES, seed: int = 0, style: str = "standard") -> SyntheticSplits:
    """Render the synthetic training and test splits of one run (deterministic per arguments) in the
    renderer ``style``."""
    from securegaze.data.synthetic import render, sample_params, synthetic_style

    if train_samples < 2 or test_samples < 1:
        raise ConfigError(f"need >= 2 training and >= 1 test samples, got {train_samples} and {test_samples}")
    config = synthetic_style(style, size=int(size))
    parts = []
    for n, dataset_seed in ((train_samples, 2 * seed), (test_samples, 2 * seed + 1)):
        faces = sample_params(int(n), dataset_seed, config)
        parts.append((ArrayGazeDataset(render(faces, config), faces.gaze, faces.subjects), faces))
    (train, train_faces), (test, test_faces) = parts
    return SyntheticSplits(train, train_faces, test, test_faces, int(size), int(seed), style)


def attack_train_config(architecture: str, size: int, epochs: int, batch_size: int, lr: float, seed: int,
                  model_kwargs: dict | None):
    from securegaze.training import TrainConfig

    config = TrainConfig(architecture=architecture, model_kwargs=dict(model_kwargs or {}), input_size=int(size),
                         epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), seed=int(seed))
    config.validate()
    return config


def _claim_dir(out: Path, recipe: dict, resume: bool) -> None:
    """Refuse to continue a checkpoint in ``out`` that another recipe wrote; record this recipe."""
    path = out / "recipe.json"
    if (out / "checkpoint.pt").exists() and resume:
        old = read_json(path, "run recipe") if path.exists() else None
        if old != recipe:
            raise ConfigError(f"{out}: holds a run with other settings (see {path}); use another output "
                              "directory or resume=False")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, recipe)
    if not resume and (out / "checkpoint.pt").exists():
        (out / "checkpoint.pt").unlink()


def run_benign(out_dir: str | Path, data: SyntheticSplits, config, progress: Callable | None = None,
               time_budget_s: float | None = None, resume: bool = True):
    """Train a benign model on the clean split (same config and seed as the attacked one).

    Returns ``(model, summary, train_time_s)``. A finished run in ``out_dir`` with the same recipe is
    resumed at its end, i.e. reused without retraining.
    """
    from securegaze.training import train

    out = Path(out_dir)
    recipe = {"attack": None, "data": data.describe(), "train_config": to_json(asdict(config))}
    _claim_dir(out, recipe, resume)
    if progress:
        progress(RunStage("training the benign model"))
    started = time.monotonic()
    model, summary = train(config, data.train, None, out, resume=resume, progress=progress, time_budget_s=time_budget_s)
    return model, summary, time.monotonic() - started


def run_attack(name: str, target_gaze=None, poison_rate: float | None = None, seed: int = 0,
               out_dir: str | Path = "runs/attack", size: int = 64, train_samples: int = DEFAULT_TRAIN_SAMPLES,
               test_samples: int = DEFAULT_TEST_SAMPLES, epochs: int = DEFAULT_EPOCHS, batch_size: int = 128,
               lr: float = 2e-3, architecture: str = "small_cnn", model_kwargs: dict | None = None,
               settings: dict | None = None, benign_dir: str | Path | None = None,
               data: SyntheticSplits | None = None, progress: Callable | None = None,
               time_budget_s: float | None = None, resume: bool = True, style: str = "standard") -> dict:
    """Train and measure one backdoored model on synthetic faces; returns the ``attack.json`` record.

    ``name``: a registered attack (``securegaze.attacks.ATTACKS.names()``); ``target_gaze``:
    (pitch, yaw) radians (None: the attack default); ``poison_rate``: None for the attack's default;
    ``seed``: seeds the data (train ``2 * seed``, test ``2 * seed + 1``), the model and the attack;
    ``settings``: the attack's own settings (a full ``attack.settings()`` dict is accepted too;
    explicit arguments win). ``size`` in px, ``epochs`` / ``batch_size`` / ``lr`` as in ``TrainConfig``.
    ``benign_dir``: also train (or reuse) the benign model of the same seed there and measure it
    against the same trigger. ``data``: pre-rendered splits (must match size, sample counts and
    style) so several attacks share one rendering. ``style``: the renderer style of the faces.

    Returned dict (also written atomically to ``out_dir/attack.json``): ``attack``, ``settings``,
    ``target_gaze_rad`` / ``target_gaze_deg``, ``poison_rate``, ``seed``, ``metrics``
    (:class:`AttackMetrics` as a dict), ``benign_metrics`` (the benign model against the same
    trigger, plus its ``dir``; None without ``benign_dir``), ``train_time_s``,
    ``poisoned_count``, ``data``, ``train_config``, ``finished``, ``conventions``, ``files``.
    """
    from securegaze.attacks.metrics import evaluate_attack
    from securegaze.attacks.registry import create_attack

    merged = dict(settings or {})
    for key, value in (("target_gaze", target_gaze), ("poison_rate", poison_rate), ("seed", seed)):
        if value is not None:
            merged[key] = value
    attack = create_attack(name, **merged)
    seed = attack.seed
    config = attack_train_config(architecture, size, epochs, batch_size, lr, seed, model_kwargs)
    out = Path(out_dir)
    if data is None:
        if progress:
            progress(RunStage(f"rendering {train_samples} training and {test_samples} test faces at {size} px"))
        data = render_splits(size, train_samples, test_samples, seed, style)
    elif ((data.size, len(data.train), len(data.test), data.seed, data.style)
          != (size, train_samples, test_samples, seed, style)):
        raise ConfigError(f"pre-rendered data {data.describe()} does not match size={size}, "
                          f"train_samples={train_samples}, test_samples={test_samples}, seed={seed}, style={style}")
    recipe = {"attack": name, "settings": attack.settings(), "data": data.describe(),
              "train_config": to_json(asdict(config))}
    _claim_dir(out, recipe, resume)

    if progress:
        progress(RunStage(f"training the {name} backdoored model"))
    started = time.monotonic()
    model, summary = attack.train_backdoored(config, data.train, None, out, faces=data.train_faces,
                                             progress=progress, time_budget_s=time_budget_s, resume=resume)
    train_time = time.monotonic() - started
    if progress:
        progress(RunStage("measuring the attack"))
    metrics = evaluate_attack(model, attack, data.test, data.test_faces)

    benign = None
    if benign_dir is not None:
        benign_model, _, _ = run_benign(benign_dir, data, config, progress, time_budget_s, resume)
        benign = {**evaluate_attack(benign_model, attack, data.test, data.test_faces).to_dict(),
                  "dir": str(benign_dir)}

    target = [float(v) for v in attack.target_gaze]
    files = {"model": "model.safetensors"}
    if "generator_file" in summary.get("attack", {}):
        files["generator"] = summary["attack"]["generator_file"]
    record = {
        "attack": name,
        "settings": attack.settings(),
        "target_gaze_rad": target,
        "target_gaze_deg": [math.degrees(v) for v in target],
        "poison_rate": attack.poison_rate,
        "seed": seed,
        "metrics": metrics.to_dict(),
        "benign_metrics": benign,
        "train_time_s": round(train_time, 1),
        "poisoned_count": summary.get("attack", {}).get("poisoned_count"),
        "modified_count": summary.get("attack", {}).get("modified_count"),
        "data": data.describe(),
        "train_config": to_json(asdict(config)),
        "finished": bool(summary.get("finished", True)),
        "conventions": CONVENTION,
        "files": files,
    }
    atomic_write_json(out / "attack.json", record)
    return record


def render_test_split(size: int, test_samples: int, seed: int, style: str = "standard"):
    """The test split of :func:`render_splits` alone: ``(ArrayGazeDataset, FaceParams)`` of dataset seed 2 * seed + 1."""
    from securegaze.data.synthetic import render, sample_params, synthetic_style

    config = synthetic_style(style, size=int(size))
    faces = sample_params(int(test_samples), 2 * int(seed) + 1, config)
    return ArrayGazeDataset(render(faces, config), faces.gaze, faces.subjects), faces


def load_attack_run(run_dir: str | Path, test_samples: int | None = None):
    """Rebuild the attack of a finished run (``attack.json``) and its test split.

    ``run_dir``: a directory written by :func:`run_attack` (``securegaze attack`` or a zoo member).
    Returns ``(attack, test_set, test_faces)``; the input-aware attack gets its trained generator
    back from the run's file. ``test_samples`` overrides the run's test-set size (same seed, a prefix
    of the faces). Raises InputFileError when the record is missing or unreadable.
    """
    from securegaze.attacks.registry import create_attack
    from securegaze.errors import InputFileError

    run_dir = Path(run_dir)
    path = run_dir / "attack.json"
    if not path.is_file():
        raise InputFileError(f"{path}: not found; expected the attack record of a 'securegaze attack' run or a zoo model")
    record = read_json(path, "attack record")
    try:
        attack = create_attack(record["attack"], **record["settings"])
        data = record["data"]
        size, seed, count = int(data["size"]), int(data["seed"]), int(data["test_samples"])
        style = str(data.get("style", "standard"))  # records from before styles: the standard faces
    except (KeyError, TypeError, ValueError) as exc:
        raise InputFileError(f"{path}: not a valid attack record ({type(exc).__name__}: {exc})") from None
    generator_file = record.get("files", {}).get("generator")
    if generator_file:
        attack.load_generator(run_dir / generator_file)
    test_set, faces = render_test_split(size, test_samples or count, seed, style)
    return attack, test_set, faces
