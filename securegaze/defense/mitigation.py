"""Mitigation after a scan: unlearn the reversed trigger by fine-tuning (docs/architecture.md section 6).

The model is fine-tuned on the clean images and on their reversed-triggered versions x' = M(x), both
labelled with the gaze the *original* model predicts on the clean x (or the true gaze when labels are
given). The backdoor's shortcut "trigger -> target" then costs loss, while the clean behaviour is what
the labels already ask for. Fine-tuning runs in eval mode: batch-norm statistics and dropout stay as
trained, since a few hundred clean images would only corrupt the running statistics.

:func:`unlearn_reversed_triggers` is the whole of SecureGaze's mitigation around :func:`mitigate`: scan,
unlearn every reversed trigger, re-scan, and repeat while the re-scan still flags the model. It is what
``securegaze mitigate``, the mitigation benchmark and the registered method ``securegaze``
(:mod:`securegaze.defense.mitigations`) run.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from securegaze.defense.base import ReversedTrigger, ReversesTrigger, ScanProgress
from securegaze.defense.feature_directions import backdoor_directions, blind_head, reproject
from securegaze.defense.inputs import check_gaze_model, check_setting, clean_tensor
from securegaze.defense.report import ScanReport, decide
from securegaze.defense.securegaze import TriggerGenerator, load_generator
from securegaze.defense.securegaze.warp import WarpField, kept_warp_fields
from securegaze.errors import ConfigError, DatasetError, InputFileError, ModelFormatError
from securegaze.validation import check_number

#: Defaults sized for a few hundred clean images: ~10 passes at a learning rate an order of magnitude
#: below training (the model only has to forget a shortcut, not learn gaze again).
DEFAULT_EPOCHS = 10
DEFAULT_LR = 3e-4
#: Bumped when the mitigation procedure changes (cached benchmark reports of another version are redone).
#: 2: a uniform-price reversal next to the scan's, deeper copies of every edit, re-scan rounds.
#: 3: a second uniform-price reversal aimed at the scan's target gaze.
#: 4: the extra reversals run without the probe (whole-image edits); edit dropout; after each round a
#:    reversal aimed at that target on the tuned model decides whether the rounds go on (its cost over
#:    the shift reference's still below the detector's threshold), and joins the triggers.
#: 5: the head is made blind to the first round's reversed edits' feature directions and kept so
#:    through every round (:mod:`~securegaze.defense.feature_directions`).
#: 6: rounds after the first fine-tune at a third of the learning rate (:data:`LATER_ROUNDS_LR_FACTOR`).
#: 7: each round's rate decays to 0 along a half cosine (:data:`LR_SCHEDULES`).
#: 8: the scan's and the re-scans' warp fields join the triggers when they gathered the outputs.
#: 9: the warp branch's best field joins them even when it did not (searched for the mitigation below 50 px).
MITIGATION_VERSION = 9
#: At most this many fine-tune + re-scan rounds (securegaze mitigate --rounds).
DEFAULT_ROUNDS = 3
#: Rounds after the first start from a model whose clean error is already recovered and only add the
#: re-scan's or the aimed reversal's edit, so they fine-tune at this share of the first round's rate
#: (version 6): on the 32-px zoo of docs/baselines.md the four models that ran more than one round end at
#: +0.18..+0.43 deg clean error instead of +0.23..+0.57, their ASR still 0.0-2.2 % ("Mitigation version 6").
LATER_ROUNDS_LR_FACTOR = 1 / 3
#: How the rate moves over one round's steps: held ("constant") or decayed from ``lr`` to 0 along a half
#: cosine ("cosine", version 7), so that a round ends on small steps rather than wherever the last
#: full-rate step left the model (on the 32-px zoo of docs/baselines.md a glasses model's real ASR
#: moved between 4.0 and 5.8 % from epoch to epoch at the constant rate; "Mitigation version 7").
LR_SCHEDULES = ("constant", "cosine")
DEFAULT_LR_SCHEDULE = "cosine"
#: Each reversed edit is unlearnt as found and scaled 2x and 3x in logit space (--strengths).
DEFAULT_STRENGTHS = (1.0, 2.0, 3.0)
#: Share of the edited training images whose edit is kept on a random half of the cells of an
#: ``EDIT_CELLS`` x ``EDIT_CELLS`` grid only (version 4): a reversed edit covers the trigger's pixels and
#: more, and unlearning whole edits lets the model key on whichever part of the edit is easiest.
DEFAULT_EDIT_DROPOUT = 0.5
EDIT_CELLS = 4


@dataclass(frozen=True)
class MitigationResult:
    """What :func:`mitigate` did: the losses (radians, L1 on pitch/yaw) before and after, per image kind."""

    steps: int
    clean_loss_before: float
    reversed_loss_before: float
    clean_loss_after: float
    reversed_loss_after: float


def _generator_from(trigger) -> nn.Module:
    if isinstance(trigger, (TriggerGenerator, WarpField)):  # a warp field resamples; unlearnt like an edit
        return trigger
    if isinstance(trigger, ReversedTrigger):  # any detector's reversal (SecureGaze's TriggerReversal, ...)
        return trigger.generator
    if isinstance(trigger, ScanReport):
        if not trigger.generator_path:
            raise ConfigError(
                "mitigate: the scan report has no generator_path; scan with artifacts_dir=... so the reversed "
                "trigger generator is written, or pass the reversal from the detector's reverse()"
            )
        return load_generator(trigger.generator_path)
    if isinstance(trigger, (str, os.PathLike)):
        return load_generator(Path(trigger))
    raise ConfigError(
        f"mitigate: cannot take a trigger from {type(trigger).__name__}; expected a ScanReport with a "
        "generator_path, a TriggerReversal, a TriggerGenerator or a generator .safetensors path"
    )


def check_strengths(strengths) -> tuple[float, ...]:
    """``strengths`` as a tuple; ConfigError unless it holds one or more numbers in (0, 10]."""
    strengths = tuple(strengths)
    check_setting("mitigate", "strengths", bool(strengths) and all(
        isinstance(a, (int, float)) and not isinstance(a, bool) and 0 < a <= 10 for a in strengths),
        "one or more numbers in (0, 10]", strengths)
    return strengths


def check_lr_schedule(schedule, who: str = "mitigate") -> str:
    """``schedule`` itself; ConfigError unless it is one of :data:`LR_SCHEDULES`."""
    check_setting(who, "lr_schedule", schedule in LR_SCHEDULES, " or ".join(LR_SCHEDULES), schedule)
    return schedule


def mitigate(model: nn.Module, clean_images, trigger, labels=None, epochs: int = DEFAULT_EPOCHS,
             lr: float = DEFAULT_LR, batch_size: int = 64, seed: int = 0, strengths=(1.0,),
             progress: Callable[[ScanProgress], None] | None = None,
             return_result: bool = False, edit_dropout: float = 0.0, blind: torch.Tensor | None = None,
             lr_schedule: str = "constant"):
    """Fine-tune a copy of ``model`` against the reversed trigger; ``model`` itself is not changed.

    ``clean_images``: (N, S, S, 3) uint8 RGB, (N, 3, S, S) float in [0, 1] or an in-memory dataset;
    ``trigger``: a :class:`ScanReport` with ``generator_path``, a :class:`TriggerReversal`, a
    :class:`TriggerGenerator` or a generator file, or a list of them (each image is then paired with
    one of them, drawn afresh every epoch); ``strengths``: the edits are applied at each of these
    depths (:meth:`TriggerGenerator.forward`), 1 meaning as reversed; ``edit_dropout``: the share of
    the edited training images that keep their edit on a random half of the cells of a
    :data:`EDIT_CELLS`-square grid only (the losses reported are on whole edits); ``blind``: (D, k)
    orthonormal feature directions the head's weights are projected off after every step
    (:func:`~securegaze.defense.feature_directions.reproject`); ``lr_schedule``: one of :data:`LR_SCHEDULES`;
    ``labels``: optional (N, 2) true gaze, radians
    (default: the original model's own predictions on the clean images). Deterministic for a given
    ``seed``. Returns the fine-tuned model in eval mode, or ``(model, MitigationResult)`` with
    ``return_result``.
    """
    check_gaze_model(model, "mitigate")
    check_setting("mitigate", "epochs", isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1,
                  "an integer >= 1", epochs)
    check_setting("mitigate", "lr", isinstance(lr, (int, float)) and 0 < lr <= 1, "a number in (0, 1]", lr)
    check_setting("mitigate", "batch_size", isinstance(batch_size, int) and batch_size >= 2, "an integer >= 2",
                  batch_size)
    strengths = check_strengths(strengths)
    check_lr_schedule(lr_schedule)
    check_setting("mitigate", "edit_dropout", isinstance(edit_dropout, (int, float)) and not isinstance(edit_dropout, bool)
                  and 0 <= edit_dropout <= 1, "a number in [0, 1]", edit_dropout)
    x_all = clean_tensor(clean_images, model.input_size, "mitigate")
    triggers = list(trigger) if isinstance(trigger, (list, tuple)) else [trigger]
    if not triggers:
        raise ConfigError("mitigate: no trigger given; pass a scan report, a reversal or a generator (or a list)")
    generators = [_generator_from(t) for t in triggers]
    for generator in generators:
        if generator.input_size != model.input_size:
            raise ConfigError(
                f"mitigate: the trigger generator works on {generator.input_size}-px images but the model takes "
                f"{model.input_size} px; use the generator from this model's scan"
            )

    tuned = copy.deepcopy(model)
    device = next((t.device for t in tuned.parameters()), torch.device("cpu"))
    x_all = x_all.to(device)
    tuned.eval()
    # Every (generator, strength) pair is one way to trigger an image. The edited images are made per
    # batch rather than stored: K copies of the clean set would not fit for large inputs.
    edits = [(g, a) for g in (copy.deepcopy(g).to(device).eval() for g in generators) for a in strengths]

    def reversed_images(idx: torch.Tensor, kinds: torch.Tensor, partial: torch.Generator | None = None) -> torch.Tensor:
        """x_all[idx], each edited by the trigger ``kinds[j]`` of :data:`edits`; with ``partial`` (the
        random stream of the edit dropout) an ``edit_dropout`` share keeps its edit on half the cells."""
        x = x_all[idx]
        out = torch.empty_like(x)
        with torch.no_grad():
            for kind in torch.unique(kinds).tolist():
                sel = kinds == kind
                g, a = edits[kind]
                out[sel] = g(x[sel], a)
            if partial is not None and edit_dropout > 0:
                cells = (torch.rand(len(x), 1, EDIT_CELLS, EDIT_CELLS, generator=partial) >= 0.5).float()
                whole = (torch.rand(len(x), 1, 1, 1, generator=partial) >= edit_dropout).float()
                keep = torch.maximum(nnf.interpolate(cells, size=x.shape[-2:], mode="nearest"), whole).to(x.device)
                out = x + keep * (out - x)
        return out

    with torch.no_grad():
        if labels is None:
            targets = torch.cat([model(x_all[i:i + batch_size]) for i in range(0, len(x_all), batch_size)])
        else:
            targets = torch.as_tensor(np.asarray(labels, dtype=np.float32), device=device)
            if targets.shape != (len(x_all), 2):
                raise DatasetError(f"mitigate: labels must be (N, 2) radians with N={len(x_all)}, "
                                   f"got {tuple(targets.shape)}")
    if not torch.isfinite(targets).all():
        raise (DatasetError("mitigate: labels contain NaN or inf") if labels is not None else
               ModelFormatError("mitigate: the model predicts NaN or inf gaze on the clean images"))

    def losses() -> tuple[float, float]:
        with torch.no_grad():
            clean = torch.cat([tuned(x_all[i:i + batch_size]) for i in range(0, len(x_all), batch_size)])
            # Image i under edit i mod K: every edit is represented, one pass over the clean set.
            rev = torch.cat([tuned(reversed_images(span, span % len(edits)))
                             for span in torch.arange(len(x_all), device=device).split(batch_size)])
        return nnf.l1_loss(clean, targets).item(), nnf.l1_loss(rev, targets).item()

    before = losses()
    params = [p for p in tuned.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    batch = min(batch_size, len(x_all))
    steps_per_epoch = max(1, len(x_all) // batch)
    total, step = epochs * steps_per_epoch, 0
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch, 0x3171])
        order = torch.as_tensor(rng.permutation(len(x_all)), device=device)
        # With several triggers each image gets one of them, drawn afresh every epoch.
        which = torch.as_tensor(rng.integers(0, len(edits), len(x_all)), device=device)
        partial = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        for k in range(steps_per_epoch):
            idx = order[k * batch:(k + 1) * batch]
            # Clean and reversed-triggered versions of the same images in one batch: the model sees
            # that the edit must not change the answer.
            prediction = tuned(torch.cat([x_all[idx], reversed_images(idx, which[idx], partial)]))
            loss = nnf.l1_loss(prediction, torch.cat([targets[idx], targets[idx]]))
            if not torch.isfinite(loss):
                raise ModelFormatError(f"mitigate: fine-tuning diverged at step {step} (loss {loss.item()}); "
                                       "lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if lr_schedule == "cosine":
                optimizer.param_groups[0]["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            optimizer.step()
            if blind is not None:
                reproject(tuned, blind)
            step += 1
            if progress:
                progress(ScanProgress("mitigate", "finetune", step, total,
                                     {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]}))
    tuned.eval()
    after = losses()
    if return_result:
        return tuned, MitigationResult(step, before[0], before[1], after[0], after[1])
    return tuned


def own_predictions(model, clean_images, batch_size: int = 128) -> np.ndarray:
    """The model's own gaze on the clean images (any form :func:`clean_tensor` takes), (N, 2) radians."""

    x = clean_tensor(clean_images, model.input_size, "mitigate")
    model.eval()
    with torch.no_grad():
        gaze = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).double()
    if not torch.isfinite(gaze).all():
        raise ModelFormatError("mitigate: the model predicts NaN or inf gaze on the clean images")
    return gaze.numpy()


@dataclass
class ReversedUnlearning:
    """What :func:`unlearn_reversed_triggers` did: the tuned model, the scan before (its report and reversed
    generator), the last re-scan (report and reversal), per round the triggers unlearnt, the re-scan's
    score and verdict and the losses, and the last round's :class:`MitigationResult`."""

    tuned: nn.Module
    scan_before: ScanReport
    generator: TriggerGenerator
    scan_after: ScanReport
    reversal_after: ReversedTrigger
    rounds: list[dict]
    finetune: MitigationResult


def unlearn_reversed_triggers(model, clean_images, detector, labels=None, epochs: int = DEFAULT_EPOCHS,
                              lr: float = DEFAULT_LR, seed: int = 0,
                              scan_before: tuple | None = None,
                              scan_dir: Path | None = None, model_name: str = "", model_sha256: str | None = None,
                              progress: Callable | None = None, rounds: int = DEFAULT_ROUNDS,
                              uniform_reversal: bool = True,
                              strengths: tuple[float, ...] = DEFAULT_STRENGTHS,
                              towards_target: bool = True,
                              edit_dropout: float = DEFAULT_EDIT_DROPOUT,
                              feature_blind: bool = True,
                              later_lr_factor: float = LATER_ROUNDS_LR_FACTOR,
                              lr_schedule: str = DEFAULT_LR_SCHEDULE) -> ReversedUnlearning:
    """Scan (unless ``scan_before`` = (report, generator[, warp field]) is given), unlearn, re-scan; ``model`` is not changed.

    ``clean_images``: the defender's clean images for the scan and the fine-tuning; ``labels``: true
    gaze of the clean images (default: the original model's own predictions, for every round);
    ``scan_dir``: where the first scan writes its artifacts. The unlearning covers more than the scan's
    one reversed trigger (:data:`MITIGATION_VERSION`):

    * ``uniform_reversal``: also reverse with each of the detector's ``unlearn_also`` ablations
      (SecureGaze: ``unweighted``, a uniform pixel price), and, when the scan kept a probe window's
      restart, once more at the scan's own price: both without the probe (version 4), so they are
      whole-image edits that a trigger spread over the face (a blend, a warp) cannot hide from behind
      the window's patch. The scan prices edits near the eyes highly
      so that benign models are not flagged, and a trigger that sits on the eyes (glasses, tape on the
      brow) then reverses to some other, cheaper collapse; the model is already judged backdoored, so
      these reversals are used for unlearning only, never for a verdict;
    * ``towards_target`` (with ``uniform_reversal``): one more uniform-price reversal that must land on
      the target gaze the scan found (``reverse_towards``, where the detector has it). The free
      reversals find the cheapest collapse *anywhere*, which can be a natural one next to the
      backdoor's; the cheapest way to the backdoor's own gaze is its trigger's route (version 3);
    * with ``uniform_reversal``, the warp branch's best field (version 9) when the scan kept none: its
      field below the line, or, below 50 px where the scan does not run the branch, one searched now
      (``warp_to_unlearn``). A warp trigger the search only half reached still pulls the field onto its
      target; unlearning the field is a route closed, never a verdict (and it adds no blind direction);
    * ``strengths``: every reversed edit is also applied deeper (its logit-space residual scaled by
      each factor): the reversal finds the *smallest* edit that collapses the model, the real trigger
      lies deeper inside the backdoor's basin, and unlearning only the rim leaves it working;
    * ``rounds``: while the re-scan still flags the fine-tuned model, the collapse it found (and its warp
      field, version 8, as the scan's own) joins the triggers, at most ``rounds`` times in all;
    * the aimed route's stopping rule (with ``towards_target``, version 4): after each round a reversal
      aimed at the scan's target on the *tuned* model, at the detector's own price, is scored like a
      scan (its cost over the shift reference's cost). While that ratio is still below the detector's
      threshold, the backdoor's own route to its gaze is still as cheap as only a backdoor's is: the
      rounds go on even when the free re-scan calls the model clean, and that aimed edit and a fresh
      uniform-price one aimed at the same gaze join the triggers. Once the route costs what a benign
      model's collapse does, the rounds stop. A model whose backdoor the first round removes pays for
      no more fine-tuning; one where closing one route opened the next gets the next round;
    * ``edit_dropout`` (version 4): that share of the edited training images keeps its edit on a random
      half of a 4 x 4 grid of cells only (:func:`mitigate`);
    * ``feature_blind`` (version 5): before the first round the head is made blind to the mean
      feature shifts of that round's triggers, and kept blind while fine-tuning in every round
      (:mod:`~securegaze.defense.feature_directions`): a reversed edit and the real trigger may take
      different routes in the image, but they move the features the same way. On the 32-px zoo
      (docs/baselines.md) this took tape-02 from 42 % to 2.4 % and wanet-02 from 59 % to 1.1 % ASR;
    * ``later_lr_factor`` (version 6): rounds after the first fine-tune at ``lr`` times this. The
      collapses that keep the rounds going are mostly the fine-tuned model's own (on that zoo every
      flagged re-scan landed within 4 deg of straight ahead, 13-26 deg from the backdoor's target,
      whose real ASR was already under 3 % after the first round); a full-rate round to unlearn each
      cost clean error;
    * ``lr_schedule`` (version 7): each round's rate decays along a half cosine (:data:`LR_SCHEDULES`).
    """
    check_setting("mitigate", "rounds", isinstance(rounds, int) and not isinstance(rounds, bool) and rounds >= 1,
                  "an integer >= 1", rounds)
    later_lr_factor = check_number("mitigate", "later_lr_factor", later_lr_factor, 0, 1, low_open=True)
    check_lr_schedule(lr_schedule)
    strengths = check_strengths(strengths)
    if not isinstance(detector, ReversesTrigger):
        raise ConfigError(f"mitigate: the {detector.name} detector does not reverse a trigger; mitigation "
                          "needs one that does (e.g. securegaze)")
    if scan_before is None:
        started = time.monotonic()
        reversal = detector.reverse(model, clean_images, progress)
        report = detector.report(reversal, model_sha256=model_sha256, runtime_s=time.monotonic() - started)
        if scan_dir is not None:
            report = detector.write_artifacts(reversal, report, scan_dir)
        generator, warp_before, searched = reversal.generator, kept_warp_fields(reversal), getattr(getattr(reversal, "warp", None), "field", None)
    else:  # (report, generator[, the scan's kept warp field or None[, its unkept field or None]])
        report, generator, *warp_before = scan_before
        searched = warp_before.pop(1) if len(warp_before) > 1 else None
    if report.target_gaze is None:
        raise InputFileError(f"{model_name or 'model'}: its scan recovered no target gaze; nothing to mitigate against")
    generators = [generator] + [field for field in warp_before if field is not None]
    loose = None  # a field the scan did not keep: unlearnt, but no blind direction (each costs clean error)
    if uniform_reversal and len(generators) == 1 and hasattr(detector, "warp_to_unlearn"):
        loose = searched if searched is not None else detector.warp_to_unlearn(model, clean_images, progress)
        generators += [loose] if loose is not None else []
    # The scan keeps its cheapest collapse, which is often a probe window's patch; a trigger spread over
    # the face (a blend, a warp) survives unlearning that patch alone. So the free reversals made for the
    # unlearning run without the probe: whole-image edits, as the scan's own first stage finds them.
    whole = {"probe": False, "reference": False} if "probe" in detector.settings() else {}
    restarted = bool(((report.details or {}).get("probe") or {}).get("restart_kept"))
    free = ([detector.with_settings(**whole)] if whole and restarted else []) + [
        detector.ablation(name).with_settings(**whole) for name in detector.unlearn_also]
    for reverser in free if uniform_reversal else ():
        extra = reverser.reverse(model, clean_images, progress)
        if extra.constraints_met:
            generators.append(extra.generator)
    for name in detector.unlearn_also if uniform_reversal else ():
        if towards_target and hasattr(detector, "reverse_towards"):
            aimed = detector.ablation(name).reverse_towards(model, clean_images, report.target_gaze, progress)
            if aimed.constraints_met:
                generators.append(aimed.generator)
    aim_rounds = bool(uniform_reversal and towards_target and hasattr(detector, "reverse_towards"))
    if labels is None:
        # The original model's answers label every round (mitigate() alone would take the tuned one's).
        labels = own_predictions(model, clean_images)
    tuned, history, blind = model, [], None
    for round_no in range(1, rounds + 1):
        start = tuned
        if feature_blind and round_no == 1:
            # The first round's triggers only: every further blind direction costs clean error, and
            # later rounds' edits are routes the fine-tuned model reopened, which unlearning covers.
            x_clean = clean_tensor(clean_images, model.input_size, "mitigate")
            directions, mu = backdoor_directions(tuned, x_clean, [g for g in generators if g is not loose])
            start = copy.deepcopy(tuned)
            blind = directions if blind_head(start, directions, mu, x_clean) else None
        # Each round continues from the last round's model, against every trigger found so far, and
        # always towards the original model's answers (or the true labels): no drift accumulates.
        round_lr = lr if round_no == 1 else lr * later_lr_factor
        tuned, finetune = mitigate(start, clean_images, generators, labels=labels, epochs=epochs, lr=round_lr,
                                   seed=seed + round_no - 1, strengths=strengths, progress=progress,
                                   return_result=True, edit_dropout=edit_dropout, blind=blind,
                                   lr_schedule=lr_schedule)
        scan_started = time.monotonic()
        after_reversal = detector.reverse(tuned, clean_images, progress)
        after = detector.report(after_reversal, runtime_s=time.monotonic() - scan_started)
        entry = {"round": round_no, "triggers": len(generators), "lr": round_lr, "rescan_score": after.score,
                 "rescan_target": None if after.target_gaze is None else [float(v) for v in after.target_gaze],
                 "blind_directions": 0 if blind is None else int(blind.shape[1]),
                 "rescan_verdict": after.verdict, **asdict(finetune)}
        # The cost-priced reversal's own score and threshold (SecureGaze's report score, with
        # ``universality`` on, also weighs U, which comes with no edit to unlearn); other detectors'
        # scores are that already.
        cost_score = after.details.get("cost_ratio", after.score)
        cost_threshold = after.details.get("cost_ratio_threshold", after.threshold)
        aimed = None
        if aim_rounds and round_no < rounds:  # after the last round it could not change anything
            aimed = detector.reverse_towards(tuned, clean_images, report.target_gaze, progress)
            aimed.reference = _shift_reference(after_reversal, report)
            entry["aimed_ratio"] = aimed.score if aimed.reference is not None else None
            if aimed.reference is None or decide(aimed.score, cost_threshold, after.suspicious_when) != "backdoored":
                aimed = None
        history.append(entry)
        # Another round needs an edit to unlearn: the re-scan's own only when its cost ratio flagged it.
        rescan_found = decide(cost_score, cost_threshold, after.suspicious_when) == "backdoored"
        rescan_warp = kept_warp_fields(after_reversal)
        if (not rescan_found and not rescan_warp and aimed is None) or round_no == rounds:
            break
        generators += rescan_warp
        if rescan_found:
            generators.append(after_reversal.generator)
        if aimed is not None:
            generators.append(aimed.generator)
            for name in detector.unlearn_also:
                uniform = detector.ablation(name).reverse_towards(tuned, clean_images, report.target_gaze, progress)
                if uniform.constraints_met:
                    generators.append(uniform.generator)
    return ReversedUnlearning(tuned, report, generator, after, after_reversal, history, finetune)


def _shift_reference(rescan: ReversedTrigger, before: ScanReport):
    """The shift reference an aimed reversal on the tuned model is scored against: the re-scan's own
    (same model, same price), or, when the re-scan met no collapse and so ran none, the cost the first
    scan's reference measured (a reversal-like record holding that cost; None when neither exists)."""
    reference = getattr(rescan, "reference", None)
    if reference is not None:
        return reference
    cost = ((before.details or {}).get("reference") or {}).get("cost")
    return SimpleNamespace(cost=float(cost)) if cost is not None else None
