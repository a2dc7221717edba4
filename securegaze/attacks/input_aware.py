"""Input-aware dynamic backdoor (Nguyen and Tran, NeurIPS 2020): a trigger generator trained with the model.

The trigger of an image x is ``x' = x + (pattern(x) - x) * mask(x)``, with ``pattern`` and ``mask``
two small convolutional encoder-decoders (a :class:`TriggerGenerator`), so every image gets its own
trigger. Training runs in two phases:

1. the mask network alone, for ``mask_steps`` steps: a **diversity** loss (different images must get
   different masks: ``rms(x1 - x2) / rms(m(x1) - m(x2))``) plus a **norm** loss that keeps the mean
   mask below ``mask_density``; then it is frozen;
2. the gaze model and the pattern network jointly. In every batch a ``poison_rate`` share gets its
   own trigger and the target gaze (backdoor), a ``cross_rate`` share gets a trigger generated from a
   *different* image and keeps its true label (cross mode: a trigger only works on the image it was
   made for, so it cannot be copied), the rest stays clean; plus the diversity loss on the patterns.

:meth:`InputAwareAttack.apply` needs the trained generator: the attack object holds it after
:meth:`~InputAwareAttack.train_backdoored` (which also writes ``out_dir/generator.safetensors``
beside the model), or load it with :meth:`~InputAwareAttack.load_generator`. Without one it raises
a :class:`ConfigError` that says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from securegaze.attacks.base import Attack, check_images, check_int, check_number
from securegaze.data.base import ArrayGazeDataset, to_tensor_batch
from securegaze.errors import ConfigError, InputFileError
from securegaze.io import atomic_write, atomic_write_json, save_safetensors, save_weights
from securegaze.json_codec import to_json

GENERATOR_FILE = "generator.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
# Stream tags of the attack's own random draws (mask-phase batches, cross partners).
_MASK_BATCH_STREAM = 0x3A5C
#: Slope of the near-binary mask: 0.5 + 0.5 * tanh(MASK_SHARPNESS * (sigmoid(raw) - 0.5)), as the
#: paper's thresholding, steep enough that pixels are in or out yet differentiable.
MASK_SHARPNESS = 20.0
#: Images per step of the mask phase (two halves are compared by the diversity loss).
MASK_BATCH = 32


class _EncoderDecoder(nn.Module):
    """3 -> ``out_channels`` maps at the input's resolution: two stride-2 convs down, two up."""

    def __init__(self, out_channels: int, width: int) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        self.up1 = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.ReLU(inplace=True))
        self.up2 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        z = self.down(x)
        # Upsample to explicit sizes so odd input sizes come back exactly.
        z = self.up1(nn.functional.interpolate(z, size=((h + 1) // 2, (w + 1) // 2), mode="bilinear",
                                               align_corners=False))
        z = self.up2(nn.functional.interpolate(z, size=(h, w), mode="bilinear", align_corners=False))
        return self.out(z)


class TriggerGenerator(nn.Module):
    """Pattern and mask networks. Input (N, 3, H, W) float32 RGB in [0, 1]."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.width = int(width)
        self.pattern_net = _EncoderDecoder(3, self.width)
        self.mask_net = _EncoderDecoder(1, self.width)

    def pattern(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, H, W) trigger colours in [0, 1]."""
        return torch.sigmoid(self.pattern_net(x))

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 1, H, W) near-binary mask in [0, 1]."""
        return 0.5 + 0.5 * torch.tanh(MASK_SHARPNESS * (torch.sigmoid(self.mask_net(x)) - 0.5))

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """Triggered images: pattern and mask made from ``source`` (default ``x``), stamped on ``x``."""
        src = x if source is None else source
        mask = self.mask(src)
        return x + (self.pattern(src) - x) * mask


def _rms_per_sample(a: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(a.flatten(1).pow(2).mean(1) + 1e-12)


def diversity_loss(x1: torch.Tensor, x2: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """Mean of rms(x1 - x2) / rms(g1 - g2): small when different inputs give different outputs."""
    return (_rms_per_sample(x1 - x2) / (_rms_per_sample(g1 - g2) + 1e-3)).mean()


class InputAwareAttack(Attack):
    """Input-aware dynamic trigger.

    Settings: ``cross_rate`` (share of each batch in cross mode), ``mask_density`` (target mean of
    the mask: share of the pixels the trigger may cover), ``lambda_div`` (weight of the diversity
    loss), ``lambda_norm`` (weight of the mask-size penalty), ``mask_steps`` (steps of the mask phase),
    ``generator_width`` (channels of the encoder-decoders), ``generator_lr`` (Adam learning rate of
    the generator; 0.01 as in the paper).
    """

    name = "input_aware"
    #: Tuned on 64-px synthetic faces (docs/attack_strength.md): with the paper's 10 % backdoor and
    #: 10 % cross samples the backdoor reached only ~50 % ASR in our CPU budget; 15 % / 5 % implants.
    default_poison_rate = 0.15
    #: 10 % / 15 % (5 % cross) gave 86 / 97 % ASR at the full recipe (docs/attack_strength.md).
    zoo_poison_rate_range = (0.08, 0.18)
    #: Range of a zoo model's drawn mask density (:meth:`draw_geometry`).
    DRAWN_MASK_DENSITY = (0.03, 0.08)

    def __init__(self, target_gaze=None, poison_rate: float | None = None, seed: int = 0, *,
                 cross_rate: float = 0.05, mask_density: float = 0.05, lambda_div: float = 1.0,
                 lambda_norm: float = 100.0, mask_steps: int = 200, generator_width: int = 16,
                 generator_lr: float = 1e-2) -> None:
        super().__init__(target_gaze, poison_rate, seed)
        self.cross_rate = check_number(self.name, "cross_rate", cross_rate, 0.0, 1.0, high_open=True)
        if self.poison_rate + self.cross_rate >= 1.0:
            raise ConfigError(f"input_aware: poison_rate + cross_rate = {self.poison_rate + self.cross_rate:g} must "
                              "stay below 1 (each batch needs clean samples)")
        self.mask_density = check_number(self.name, "mask_density", mask_density, 0.0, 1.0, low_open=True)
        self.lambda_div = check_number(self.name, "lambda_div", lambda_div, 0.0, 100.0)
        self.lambda_norm = check_number(self.name, "lambda_norm", lambda_norm, 0.0, 1e4)
        self.mask_steps = check_int(self.name, "mask_steps", mask_steps, 0, 100_000)
        self.generator_width = check_int(self.name, "generator_width", generator_width, 2, 128)
        self.generator_lr = check_number(self.name, "generator_lr", generator_lr, 0.0, 1.0, low_open=True)
        #: The trained generator (None until trained or loaded).
        self.generator: TriggerGenerator | None = None

    @classmethod
    def draw_geometry(cls, rng: np.random.Generator) -> dict:
        """``mask_density`` (the share of pixels a trigger may cover) in ``DRAWN_MASK_DENSITY``."""
        return {"mask_density": round(float(rng.uniform(*cls.DRAWN_MASK_DENSITY)), 4)}

    def attack_settings(self) -> dict:
        return {"cross_rate": self.cross_rate, "mask_density": self.mask_density, "lambda_div": self.lambda_div,
                "lambda_norm": self.lambda_norm, "mask_steps": self.mask_steps,
                "generator_width": self.generator_width, "generator_lr": self.generator_lr}

    # -- the generator --------------------------------------------------------------------------
    def new_generator(self) -> TriggerGenerator:
        """A freshly initialised generator; its weights depend only on the attack's seed."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return TriggerGenerator(self.generator_width)

    def save_generator(self, path: str | Path) -> Path:
        """Write the trained generator as safetensors (no pickle), with the attack settings as metadata."""
        generator = self._require_generator()
        state = {k: v.detach().contiguous().cpu() for k, v in generator.state_dict().items()}
        meta = {"attack": self.name, "settings": json.dumps(self.settings()), "width": str(generator.width)}
        return save_safetensors(state, path, meta)

    def load_generator(self, path: str | Path) -> TriggerGenerator:
        """Load the generator written by :meth:`save_generator` (e.g. ``RUN/generator.safetensors``)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise InputFileError(f"{path}: input-aware trigger generator not found")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                state = {k: fh.get_tensor(k) for k in fh.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputFileError(f"{path}: not a readable safetensors generator file ({exc})") from None
        if meta.get("attack") != self.name:
            raise InputFileError(f"{path}: not an input_aware trigger generator (attack={meta.get('attack')!r})")
        generator = TriggerGenerator(int(meta.get("width", self.generator_width)))
        try:
            generator.load_state_dict(state)
        except RuntimeError as exc:
            raise InputFileError(f"{path}: generator weights do not fit ({str(exc).splitlines()[0]})") from None
        generator.eval()
        self.generator = generator
        return generator

    def _require_generator(self) -> TriggerGenerator:
        if self.generator is None:
            raise ConfigError("input_aware: no trained trigger generator; run train_backdoored() first or "
                              f"load one with load_generator('RUN/{GENERATOR_FILE}')")
        return self.generator

    @torch.no_grad()
    def apply(self, images: np.ndarray, faces=None) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> each image with its own generated trigger (needs the generator)."""
        images = check_images(self.name, images)
        self._check_faces(images, faces)
        generator = self._require_generator()
        was_training = generator.training
        generator.eval()
        out = np.empty_like(images)
        for start in range(0, len(images), 256):
            x = to_tensor_batch(images[start:start + 256])
            triggered = generator(x).clamp(0.0, 1.0)
            out[start:start + 256] = (triggered * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        generator.train(was_training)
        return out

    # -- training -------------------------------------------------------------------------------
    def _train_mask(self, generator: TriggerGenerator, images: np.ndarray, batch_size: int,
                    progress: Callable | None) -> list[dict]:
        """Phase 1: the mask network alone (diversity + size penalty). Returns a short loss history."""
        params = list(generator.mask_net.parameters())
        optimizer = torch.optim.Adam(params, lr=self.generator_lr, betas=(0.5, 0.9))
        history = []
        n = len(images)
        # Small batches: the mask phase only has to spread masks over image content, and at full
        # batch size it would cost as much as a third of the gaze training.
        half = max(1, min(batch_size, MASK_BATCH) // 2)
        for step in range(self.mask_steps):
            rng = np.random.default_rng([self.seed, _MASK_BATCH_STREAM, step])
            idx = rng.choice(n, size=min(n, 2 * half), replace=False)
            x = to_tensor_batch(images[idx])
            x1, x2 = x[:half], x[half:2 * half]
            if len(x2) < len(x1):
                x1 = x1[:len(x2)]
            m1, m2 = generator.mask(x1), generator.mask(x2)
            div = diversity_loss(x1, x2, m1, m2)
            norm = torch.relu(torch.cat([m1, m2]).mean() - self.mask_density)
            loss = self.lambda_div * div + self.lambda_norm * norm
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % 50 == 0 or step == self.mask_steps - 1:
                mask_mean = torch.cat([m1, m2]).mean().item()
                history.append({"mask_step": step, "diversity": div.item(), "mask_mean": mask_mean})
            if progress:
                progress(MaskProgress(step + 1, self.mask_steps, loss.item()))
        for p in params:
            p.requires_grad_(False)
        return history

    def train_backdoored(self, config, train_set: ArrayGazeDataset, val_set: ArrayGazeDataset | None,
                         out_dir: str | Path, faces=None, progress: Callable | None = None,
                         time_budget_s: float | None = None, resume: bool = True):
        """Train the gaze model and the trigger generator together (see the module docstring).

        ``config``: a :class:`~securegaze.training.TrainConfig` (same model, optimiser, schedule and
        data order as :func:`securegaze.training.train`). ``train_set`` is clean: the attack poisons
        each batch on the fly. ``faces`` is ignored (the trigger is digital). Writes
        ``out_dir/model.safetensors``, ``out_dir/generator.safetensors``, ``summary.json`` and a
        resumable ``checkpoint.pt``. Returns ``(model in eval mode, summary dict)``; afterwards
        :meth:`apply` uses the trained generator.
        """
        from securegaze.training import (
            TrainProgress,
            epoch_order,
            evaluate,
            gaze_loss,
            load_checkpoint,
        )

        config.validate()
        images = check_images(self.name, train_set.images)
        if images.shape[1] != config.input_size:
            raise ConfigError(f"training images are {images.shape[1]} px, config expects {config.input_size}")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ckpt_path = out / CHECKPOINT_FILE
        steps_per_epoch = len(images) // config.batch_size
        if steps_per_epoch < 1:
            raise ConfigError(f"training set has {len(images)} samples, fewer than one batch of {config.batch_size}")
        total_steps = steps_per_epoch * config.epochs

        model = config.build_model()
        generator = self.new_generator()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps,
                                                        pct_start=0.15)
        gen_optimizer = torch.optim.Adam(generator.pattern_net.parameters(), lr=self.generator_lr, betas=(0.5, 0.9))
        train_config = to_json(asdict(config))
        epoch, step_in_epoch, global_step, history, mask_history = 0, 0, 0, [], []
        if resume and ckpt_path.exists():
            state = load_checkpoint(ckpt_path)
            if state.get("train_config") != train_config or state.get("attack_settings") != self.settings():
                raise ConfigError(f"{ckpt_path}: checkpoint was written with other training or attack settings; "
                                  "use another output directory or resume=False")
            model.load_state_dict(state["model"])
            generator.load_state_dict(state["generator"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            gen_optimizer.load_state_dict(state["generator_optimizer"])
            epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
            history, mask_history = list(state["history"]), list(state["mask_history"])
            for p in generator.mask_net.parameters():
                p.requires_grad_(False)
        else:
            mask_history = self._train_mask(generator, images, config.batch_size, progress)

        def save_checkpoint() -> None:
            state = {"format": 1, "model": model.state_dict(), "model_config": to_json(model.config()),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "generator": generator.state_dict(), "generator_optimizer": gen_optimizer.state_dict(),
                     "train_config": train_config, "attack_settings": self.settings(), "epoch": epoch,
                     "step_in_epoch": step_in_epoch, "global_step": global_step, "history": history,
                     "mask_history": mask_history}
            atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))

        labels = torch.from_numpy(train_set.gaze.astype(np.float32))
        target = torch.tensor(self.target_gaze, dtype=torch.float32)
        n_backdoor = max(1, round(self.poison_rate * config.batch_size))
        n_cross = round(self.cross_rate * config.batch_size)
        started = time.monotonic()
        stopped_early = False
        model.train()
        generator.train()
        while epoch < config.epochs:
            order = epoch_order(config.seed, epoch, len(images))
            while step_in_epoch < steps_per_epoch:
                idx = np.sort(order[step_in_epoch * config.batch_size:(step_in_epoch + 1) * config.batch_size])
                x, y = to_tensor_batch(images[idx]), labels[idx].clone()
                # Cross partners: the batch shifted by one (the batch order is already random).
                partner = torch.roll(x, shifts=1, dims=0)
                bd = slice(0, n_backdoor)
                cross = slice(n_backdoor, n_backdoor + n_cross)
                pattern_bd = generator.pattern(x[bd])
                x_bd = x[bd] + (pattern_bd - x[bd]) * generator.mask(x[bd])
                pieces = [x_bd]
                div = torch.zeros(())
                if n_cross:
                    pattern_cross = generator.pattern(partner[cross])
                    pieces.append(x[cross] + (pattern_cross - x[cross]) * generator.mask(partner[cross]))
                    pair = min(n_backdoor, n_cross)
                    div = diversity_loss(x[bd][:pair], partner[cross][:pair], pattern_bd[:pair], pattern_cross[:pair])
                pieces.append(x[n_backdoor + n_cross:])
                y[bd] = target
                loss_gaze = gaze_loss(model, torch.cat(pieces), y, config)
                loss = loss_gaze + self.lambda_div * div
                if not torch.isfinite(loss):
                    raise ConfigError(f"input_aware training diverged at step {global_step} (loss {loss.item()}); "
                                      "lower lr or generator_lr")
                optimizer.zero_grad(set_to_none=True)
                gen_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                gen_optimizer.step()
                scheduler.step()
                step_in_epoch += 1
                global_step += 1
                if progress:
                    progress(TrainProgress(epoch, global_step, total_steps, loss_gaze.item()))
                over_budget = time_budget_s is not None and time.monotonic() - started > time_budget_s
                if global_step % config.checkpoint_every == 0 or over_budget:
                    save_checkpoint()
                if over_budget:
                    stopped_early = True
                    break
            if stopped_early:
                break
            epoch, step_in_epoch = epoch + 1, 0
            record = {"epoch": epoch, "step": global_step, "elapsed_s": round(time.monotonic() - started, 1),
                      "diversity": div.item()}
            if val_set is not None:
                val = evaluate(model, val_set)
                model.train()
                record["val_mean_deg"] = val.mean_deg
                if progress:
                    progress(TrainProgress(epoch, global_step, total_steps, float("nan"), val))
            history.append(record)
            save_checkpoint()

        model.eval()
        generator.eval()
        self.generator = generator
        summary = {"config": train_config, "model_config": model.config(), "epochs_done": epoch,
                   "steps_done": global_step, "finished": not stopped_early, "history": history,
                   "mask_history": mask_history, "train_samples": len(images),
                   "attack": {**self.describe(), "generator_file": GENERATOR_FILE,
                              "backdoor_per_batch": n_backdoor, "cross_per_batch": n_cross}}
        if val_set is not None:
            summary["val"] = evaluate(model, val_set).to_dict()
        save_weights(model, out / "model.safetensors",
                     metadata={"summary": {k: summary[k] for k in ("config", "steps_done")}})
        self.save_generator(out / GENERATOR_FILE)
        atomic_write_json(out / "summary.json", summary)
        return model, summary


@dataclass(frozen=True)
class MaskProgress:
    """What a progress callback receives during the mask phase (before any gaze training)."""

    step: int
    total_steps: int
    loss: float
