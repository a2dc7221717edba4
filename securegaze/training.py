"""Training and evaluation of gaze models, with resumable checkpoints.

Checkpoints are plain ``torch.save`` dictionaries of tensors and numbers, always read back with
``torch.load(..., weights_only=True)`` (no arbitrary unpickling), written atomically. The data order
of every epoch is a pure function of ``(seed, epoch)``, so a run resumed from a checkpoint sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from securegaze.data.base import ArrayGazeDataset, to_tensor_batch
from securegaze.errors import ConfigError, InputFileError
from securegaze.io import atomic_write, atomic_write_json, save_weights, unpickling_refusal
from securegaze.json_codec import to_json
from securegaze.models import GazeModel, create_model


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run. Angles in radians unless a name says ``_deg``."""

    architecture: str = "small_cnn"
    model_kwargs: dict = field(default_factory=dict)
    input_size: int = 64
    epochs: int = 12
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    # Steps between mid-epoch checkpoints (epoch ends always write one).
    checkpoint_every: int = 100
    # For binned heads: weight of the L1 loss on the decoded angle next to the bin cross-entropy
    # (L2CS-Net combines both; 1.0 works for our bin width).
    binned_regression_weight: float = 1.0

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (16 <= self.input_size <= 512, f"input_size must be within 16..512 px, got {self.input_size}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def build_model(self) -> GazeModel:
        torch.manual_seed(self.seed)
        return create_model(self.architecture, input_size=self.input_size, **self.model_kwargs)


@dataclass(frozen=True)
class EvalResult:
    """Angular errors in degrees over a dataset."""

    mean_deg: float
    median_deg: float
    p95_deg: float
    count: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainProgress:
    """What a progress callback receives after each step."""

    epoch: int
    step: int  # global step
    total_steps: int
    loss: float
    val: EvalResult | None = None


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 2) float32 radians, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(to_tensor_batch(images[i : i + batch_size]).to(device)).float().cpu()
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)


def evaluate(model: nn.Module, dataset: ArrayGazeDataset, batch_size: int = 256) -> EvalResult:
    """Angular error of ``model`` on an in-memory dataset (images must be the model's input size)."""
    from securegaze.geometry import angular_error_deg

    pred = predict(model, dataset.images, batch_size)
    err = angular_error_deg(pred, dataset.gaze)
    return EvalResult(float(err.mean()), float(np.median(err)), float(np.percentile(err, 95)), int(len(err)))


def gaze_loss(model: GazeModel, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """L1 on (pitch, yaw) for direct heads; bin cross-entropy + L1 on the decoded angle for binned."""
    z = model.features(x)
    if model.decoding == "direct":
        return torch.nn.functional.l1_loss(model.head(z), y)
    bins = model.bins
    lp, ly = model.head_logits(z)
    target_bins = torch.clamp(
        ((torch.rad2deg(y) - bins.start_deg) / bins.width_deg).long(), 0, bins.count - 1
    )
    ce = torch.nn.functional.cross_entropy(lp, target_bins[:, 0]) + torch.nn.functional.cross_entropy(
        ly, target_bins[:, 1]
    )
    from securegaze.models import decode_bins

    decoded = torch.stack([decode_bins(lp, bins), decode_bins(ly, bins)], -1)
    return ce + config.binned_regression_weight * torch.nn.functional.l1_loss(decoded, y)


def training_device(name: str = "auto") -> str:
    """The torch device a run trains on: ``"auto"`` is ``"cuda"`` when torch sees a GPU, else ``"cpu"``;
    ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` are checked (a GPU asked for but not there is a
    :class:`~securegaze.errors.ConfigError`)."""
    name = name.strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: torch sees no CUDA GPU on this machine; use cpu or auto")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        return name
    raise ConfigError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")


class _BatchSource:
    """Training batches (images as float tensors, labels) on the training device.

    On a GPU the uint8 images are copied there once when they fit in a quarter of its free memory
    (each batch is then gathered and converted on the GPU); otherwise, and on the CPU, each batch is
    converted on the CPU and moved."""

    def __init__(self, dataset: ArrayGazeDataset, device: torch.device) -> None:
        self.images, self.device, self.on_device = dataset.images, device, None
        self.labels = torch.from_numpy(dataset.gaze).to(device)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if self.images.nbytes < free // 4:
                self.on_device = torch.from_numpy(np.ascontiguousarray(self.images)).to(device)

    def get(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        where = torch.from_numpy(idx).to(self.device)
        if self.on_device is not None:
            x = self.on_device[where].permute(0, 3, 1, 2).float().div_(255.0)
        else:
            x = to_tensor_batch(self.images[idx]).to(self.device, non_blocking=True)
        return x, self.labels[where]


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 7]).permutation(n)


def _save_checkpoint(path: Path, model, optimizer, scheduler, config: TrainConfig, epoch: int,
                     step_in_epoch: int, global_step: int, history: list[dict]) -> None:
    state = {
        "format": 1,
        "model": model.state_dict(),
        "model_config": to_json(model.config()),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "train_config": to_json(asdict(config)),
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "global_step": global_step,
        "history": history,
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint safely (``weights_only=True``)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputFileError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # truncated zip, foreign pickle, ...
        # torch's refusal spans paragraphs and advises loading the file unsafely: only what is wrong is kept.
        why = unpickling_refusal(exc) or type(exc).__name__
        raise InputFileError(f"{path}: not a readable securegaze checkpoint ({type(exc).__name__}: {why}); "
                             "refused without unpickling, expected one written by securegaze train") from None
    if not isinstance(state, dict) or state.get("format") != 1 or "model" not in state:
        raise InputFileError(f"{path}: not a securegaze training checkpoint (format 1 expected)")
    return state


def starting_weights_problem(init: GazeModel, model: GazeModel) -> str | None:
    """Why ``init``'s weights cannot start a run that trains ``model`` (None: they can), as the end of
    a sentence about them."""
    if init.config() == model.config():
        return None
    return (f"hold a {init.config()} model; this run trains {model.config()}: give the same --arch, --width, --size "
            "and --decoding")


def train(
    config: TrainConfig,
    train_set: ArrayGazeDataset,
    val_set: ArrayGazeDataset | None,
    out_dir: str | Path,
    resume: bool = True,
    progress: Callable[[TrainProgress], None] | None = None,
    time_budget_s: float | None = None,
    init: GazeModel | None = None,
    device: str = "cpu",
) -> tuple[GazeModel, dict]:
    """Train ``config``'s model on ``train_set``; returns (model in eval mode, summary dict).

    Writes ``out_dir/checkpoint.pt`` (resumable state) during training and, at the end,
    ``out_dir/model.safetensors`` plus ``out_dir/summary.json``. With ``resume`` an existing
    checkpoint in ``out_dir`` is continued (its settings must match ``config``).
    ``time_budget_s`` stops training early (after a checkpoint) once exceeded. ``init``: a model of
    the same configuration whose weights the run starts from (fine-tuning); a resumed checkpoint
    takes precedence, as it already holds them. ``device``: where to train (``"cpu"``, ``"cuda"``,
    ``"cuda:1"``; :func:`training_device` resolves ``"auto"``). Checkpoints are the same on every
    device, so a run can resume on another one; the returned model is on the CPU.
    """
    config.validate()
    size = train_set.images.shape[1]
    if size != config.input_size or train_set.images.shape[2] != config.input_size:
        raise ConfigError(f"training images are {train_set.images.shape[1:3]} px, config expects {config.input_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

    model = config.build_model()
    if init is not None:
        problem = starting_weights_problem(init, model)
        if problem:
            raise ConfigError(f"the starting weights {problem}")
        model.load_state_dict(init.state_dict())
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    model.to(dev)
    batches = _BatchSource(train_set, dev)
    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"training set has {len(train_set)} samples, fewer than one batch of {config.batch_size}")
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # One-cycle schedule: fast and robust for short CPU budgets.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=0.15)

    epoch, step_in_epoch, global_step, history = 0, 0, 0, []
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        saved = state["train_config"]
        if saved != to_json(asdict(config)):
            diff = sorted(k for k in saved if saved.get(k) != to_json(asdict(config)).get(k))
            raise ConfigError(
                f"{ckpt_path}: checkpoint was written with different settings ({', '.join(diff)}); "
                "use another --out directory or --no-resume"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        history = list(state["history"])

    started = time.monotonic()
    stopped_early = False
    model.train()
    while epoch < config.epochs:
        order = epoch_order(config.seed, epoch, len(train_set))
        while step_in_epoch < steps_per_epoch:
            idx = np.sort(order[step_in_epoch * config.batch_size : (step_in_epoch + 1) * config.batch_size])
            x, y = batches.get(idx)
            loss = gaze_loss(model, x, y, config)
            if not torch.isfinite(loss):
                raise ConfigError(f"training diverged at step {global_step} (loss {loss.item()}); lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step_in_epoch += 1
            global_step += 1
            if progress:
                progress(TrainProgress(epoch, global_step, total_steps, loss.item()))
            over_budget = time_budget_s is not None and time.monotonic() - started > time_budget_s
            if global_step % config.checkpoint_every == 0 or over_budget:
                _save_checkpoint(ckpt_path, model, optimizer, scheduler, config, epoch, step_in_epoch, global_step, history)
            if over_budget:
                stopped_early = True
                break
        if stopped_early:
            break
        epoch, step_in_epoch = epoch + 1, 0
        record = {"epoch": epoch, "step": global_step, "elapsed_s": round(time.monotonic() - started, 1),
                  "device": dev.type}
        if val_set is not None:
            val = evaluate(model, val_set)
            model.train()
            record["val_mean_deg"] = val.mean_deg
            if progress:
                progress(TrainProgress(epoch, global_step, total_steps, float("nan"), val))
        history.append(record)
        _save_checkpoint(ckpt_path, model, optimizer, scheduler, config, epoch, 0, global_step, history)

    model.eval()
    summary = {
        # Where the epochs ran (a run may resume on another device); older records name none: the CPU.
        "trained_on": sorted({record.get("device", "cpu") for record in history}) or [dev.type],
        "config": to_json(asdict(config)),
        "model_config": model.config(),
        "epochs_done": epoch,
        "steps_done": global_step,
        "finished": not stopped_early,
        "history": history,
        "train_samples": len(train_set),
    }
    if val_set is not None:
        summary["val"] = evaluate(model, val_set).to_dict()
    model.cpu()
    save_weights(model, out / "model.safetensors", metadata={"summary": {k: summary[k] for k in ("config", "steps_done")}})
    atomic_write_json(out / "summary.json", summary)
    return model, summary


# --- what ``securegaze train`` runs around train() ----------------------------------------------


class HeldOutSubjectsMissing(ConfigError):
    """Real data was given without the subjects to hold out for validation."""


def train_val_data(data: str, size: int, train_samples: int, val_samples: int, seed: int,
                   held_out_subjects: list[str], workers: int = 1) -> tuple[ArrayGazeDataset, ArrayGazeDataset]:
    """The training and validation sets of a training run: the split policy.

    ``data`` synthetic (``"synthetic"`` or ``"synthetic:STYLE"``): two disjoint renders (the train and val split seeds of
    :func:`~securegaze.data.sources.load_gaze_data`); ``held_out_subjects`` is ignored. Real data is
    split leave-subjects-out: validation holds the samples of ``held_out_subjects`` only, training
    every other subject's; real data without held-out subjects is refused
    (:class:`HeldOutSubjectsMissing`) before anything is read. ``workers``: processes that render
    synthetic faces.
    """
    from securegaze.data.sources import SYNTHETIC, load_gaze_data, source_kind

    if source_kind(data) == SYNTHETIC:
        return (load_gaze_data(data, size, train_samples, seed, "train", workers=workers),
                load_gaze_data(data, size, val_samples, seed, "val", workers=workers))
    if not held_out_subjects:
        raise HeldOutSubjectsMissing("real data needs held-out subjects for validation")
    return (load_gaze_data(data, size, train_samples, seed, "train", exclude_subjects=held_out_subjects),
            load_gaze_data(data, size, val_samples, seed, "val", subjects=held_out_subjects))


def finish_training_run(model: GazeModel, out_dir: str | Path, summary: dict, data: str, size: int, seed: int,
                        export: bool = True) -> None:
    """Write a finished run's bundle (``out_dir/bundle``, when ``export``) and its ``summary.json``.

    The bundle's provenance records the data (``data``, the training-sample count of ``summary``,
    ``size`` px, ``seed``), the validation error and the steps trained.
    """
    out = Path(out_dir)
    if export:
        from securegaze.bundle.export import export_bundle

        export_bundle(model, out / "bundle", name=out.name, provenance={
            "training_data": f"{data}, {summary['train_samples']} samples at {size} px, seed {seed}",
            "seed": seed,
            "metrics": {"val_mean_angular_error_deg": summary["val"]["mean_deg"]},
            "notes": f"securegaze train, {summary['steps_done']} steps" + (
                f", starting from the weights {summary['init_weights']['sha256'][:12]} "
                f"({Path(summary['init_weights']['path']).name})" if summary.get("init_weights") else ""),
        })
    atomic_write_json(out / "summary.json", summary)
