"""Rendering: faces in fixed-size chunks, datasets with labels, projected landmarks and trigger anchors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from securegaze.data.base import ArrayGazeDataset
from securegaze.data.synthetic.camera_finish import finish
from securegaze.data.synthetic.condition_base import Scene
from securegaze.data.synthetic.condition_names import check_mix
from securegaze.data.synthetic.conditions import draw_stage, prepare_look
from securegaze.data.synthetic.eyes import draw_eye, eye_points
from securegaze.data.synthetic.face_surface import background, draw_back_hair_and_neck, face_layer
from securegaze.data.synthetic.faces import FaceParams, SyntheticConfig, sample_params
from securegaze.data.synthetic.layout import CHUNK_PIXELS, MIX_COLUMN
from securegaze.data.synthetic.raycast import HeadFrame, Light, blend, cast_ellipsoid, surface_z
from securegaze.data.synthetic.trigger_layer import draw_trigger, trigger_frame
from securegaze.data.triggers import Trigger, resolve_trigger
from securegaze.errors import ConfigError
from securegaze.geometry import pitchyaw_to_vector


def _render_chunk(p: FaceParams, size: int, trigger: Trigger | None, occlude_eyes: bool,
                  conditions: tuple[str, ...] = ()) -> np.ndarray:
    """(N, S, S, 3) uint8 faces of one chunk.

    Cabin conditions (:mod:`securegaze.data.synthetic.conditions`) first change the faces (a night
    camera's albedos), then are drawn after the eyes: face accessories, glasses, the trigger, then
    the camera's effects. With none, this is the plain face.
    """
    look, drawn = prepare_look(p, conditions)
    p = look.params
    frame = HeadFrame.build(p, size)
    light = Light.build(p, frame)
    coords = ((np.arange(size) + 0.5) * frame.pixel - 1.0).astype(np.float32)
    u, v = coords[None, None, :], coords[None, :, None]
    image = background(p, u, v)
    hit = cast_ellipsoid(frame, u, v, p.face_axes)
    draw_back_hair_and_neck(image, p, frame, light, hit, u, v)
    face_rgb, face_alpha, skin_shade = face_layer(p, frame, light, hit)
    blend(image, face_rgb, face_alpha)
    for side in (-1, 1):
        draw_eye(image, p, frame, light, side, occlude_eyes, look.pupil_rgb)
    scene = Scene(image, p, frame, light, hit, skin_shade, face_alpha, u, v, look.infrared)
    draw_stage(scene, drawn, ("face", "glasses"))
    if trigger is not None:
        draw_trigger(image, p, frame, light, hit, skin_shade, trigger, u, v)
    draw_stage(scene, drawn, ("camera",))
    return finish(image, p, mono=look.mono)


def _as_config(config: SyntheticConfig | int | None) -> SyntheticConfig:
    if config is None:
        return SyntheticConfig()
    if isinstance(config, SyntheticConfig):
        return config
    if isinstance(config, (int, np.integer)):
        return SyntheticConfig(size=int(config))
    raise ConfigError(f"config must be a SyntheticConfig or a size in px, got {type(config).__name__}")


def render(params: FaceParams, config: SyntheticConfig | int = 64, trigger: Trigger | str | None = None,
           occlude_eyes: bool = False) -> np.ndarray:
    """Render faces: -> (N, S, S, 3) uint8 RGB, S = the config's size (or the int given).

    ``trigger``: a :class:`~securegaze.data.triggers.Trigger`, a registered trigger name, or None.
    ``occlude_eyes``: cover both eye regions with a flat patch of local skin colour (then the
    image does not depend on the gaze at all). The config's ``conditions`` (glasses, a night camera,
    ...) are drawn on every face, each with its own per-face draws.

    Faces are rendered in chunks of a fixed size, padded at the end, so a face's pixels do not
    depend on how many faces are rendered with it.
    """
    cfg = _as_config(config)
    trig = resolve_trigger(trigger)
    size = cfg.size
    n = len(params)
    if cfg.condition_mix is not None:
        out = np.empty((n, size, size, 3), np.uint8)
        groups = mix_groups(params, cfg.condition_mix)
        for g, (conds, _) in enumerate(check_mix(cfg.condition_mix)):
            idx = np.flatnonzero(groups == g)
            if len(idx):
                out[idx] = render(params.take(idx), replace(cfg, conditions=conds, condition_mix=None), trig,
                                  occlude_eyes)
        return out
    out = np.empty((n, size, size, 3), np.uint8)
    chunk = max(1, CHUNK_PIXELS // (size * size))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        idx = np.minimum(np.arange(start, start + chunk), n - 1)  # pad with the last face
        out[start:stop] = _render_chunk(params.take(idx), size, trig, occlude_eyes, cfg.conditions)[: stop - start]
    return out


def mix_groups(params: FaceParams, mix: str) -> np.ndarray:
    """(N,) the index of the entry of condition mix ``mix`` each face wears: its draw in the last
    column of ``condition_draws`` (a column no condition uses) against the entries' cumulative
    weights, so a face keeps its entry however many faces are rendered with it."""
    weights = np.array([w for _, w in check_mix(mix)], np.float64)
    edges = np.cumsum(weights / weights.sum())
    u = params.condition_draws[:, MIX_COLUMN].astype(np.float64)
    return np.minimum(np.searchsorted(edges, u, side="right"), len(weights) - 1)


def render_dataset(n: int, size: int | None = None, seed: int = 0, trigger: Trigger | str | None = None,
                   occlude_eyes: bool = False, config: SyntheticConfig | None = None,
                   workers: int = 1) -> ArrayGazeDataset:
    """``n`` synthetic faces of ``size`` px (default 64, or the config's size) with exact gaze labels.

    Same arguments give the same bytes, whatever ``workers``; the first k faces do not depend on
    ``n``. Subjects are ``"synth-<seed>-<identity>"`` with ``config.samples_per_identity`` faces
    each. ``workers`` > 1 renders in that many processes (:func:`render_parallel`).
    """
    cfg = config or SyntheticConfig()
    if size is not None and size != cfg.size:
        cfg = replace(cfg, size=int(size))
    params = sample_params(n, int(seed), cfg)
    images = render_parallel(params, cfg, trigger, occlude_eyes, workers)
    return ArrayGazeDataset(images, params.gaze, params.subjects)


#: Fewest faces a render process is given: below this, starting processes costs more than it saves.
MIN_FACES_PER_WORKER = 2000


def render_parallel(params: FaceParams, config: SyntheticConfig | int = 64, trigger: Trigger | str | None = None,
                    occlude_eyes: bool = False, workers: int = 1) -> np.ndarray:
    """:func:`render` split over up to ``workers`` processes; the same bytes as :func:`render`.

    A face's pixels do not depend on the faces rendered with it, so each process renders a
    contiguous share of the faces straight into one shared block of memory (forked processes, no
    copies through pipes). Where ``fork`` is not available, or the share would be under
    :data:`MIN_FACES_PER_WORKER` faces, it renders in this process.
    """
    import multiprocessing as mp

    cfg = _as_config(config)
    n = len(params)
    workers = max(1, min(int(workers), n // MIN_FACES_PER_WORKER))
    if workers == 1 or "fork" not in mp.get_all_start_methods():
        return render(params, cfg, trigger, occlude_eyes)
    import mmap

    shape = (n, cfg.size, cfg.size, 3)
    block = mmap.mmap(-1, int(np.prod(shape)))  # anonymous and shared: forked children write into it
    out = np.frombuffer(block, np.uint8).reshape(shape)
    bounds = np.linspace(0, n, workers + 1).astype(int)
    ctx = mp.get_context("fork")
    procs = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        proc = ctx.Process(target=_render_share, args=(out, params, cfg, trigger, occlude_eyes, int(a), int(b)))
        proc.start()
        procs.append(proc)
    for proc in procs:
        proc.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} of {workers} render processes failed (exit codes {failed}); "
                           "render with workers=1 to see the error")
    return out


def _render_share(out: np.ndarray, params: FaceParams, cfg: SyntheticConfig, trigger, occlude_eyes: bool,
                  start: int, stop: int) -> None:
    """A render process's work: faces ``start:stop`` into the shared ``out``."""
    out[start:stop] = render(params.take(np.arange(start, stop)), cfg, trigger, occlude_eyes)


def landmarks(params: FaceParams, size: int) -> dict[str, np.ndarray]:
    """Projected face points, each (N, 2) float32 pixel coordinates (x right, y down).

    ``right_eye`` / ``left_eye`` are the centres of the lid openings (subject's right eye is on the
    image's left), ``right_pupil`` / ``left_pupil`` the pupil centres, plus ``nose`` (nostrils),
    ``mouth`` and ``head`` (ellipsoid centre).
    """
    frame = HeadFrame.build(params, size)
    gaze = pitchyaw_to_vector(params.gaze)
    out = {}
    for name, side in (("right", -1), ("left", 1)):
        skin_pt, ball_pt = eye_points(params, side)
        out[f"{name}_eye"] = frame.project(skin_pt)
        pupil = frame.project(ball_pt) + gaze[:, :2] * (params.eyeball_radius * frame.scale)[:, None]
        out[f"{name}_pupil"] = pupil
    axes = params.face_axes.astype(np.float64)
    zeros = np.zeros(len(params))
    for name, y in (("nose", params.nose_y), ("mouth", params.mouth_y), ("head", zeros)):
        y = np.asarray(y, np.float64)
        z = surface_z(zeros, y, axes) if name != "head" else zeros
        out[name] = frame.project(np.stack([zeros, y, z], -1))
    return {k: frame.to_pixels(v).astype(np.float32) for k, v in out.items()}


def trigger_anchor(params: FaceParams, trigger: Trigger | str, size: int) -> np.ndarray:
    """(N, 2) float32 pixel coordinates of the centre of ``trigger`` on each face."""
    trig = resolve_trigger(trigger)
    frame = HeadFrame.build(params, size)
    return frame.to_pixels(frame.project(trigger_frame(params, trig)["centre"])).astype(np.float32)


#: Rows of the contact sheet: label, trigger name (None: clean), occlude_eyes.
