"""Benchmark: zoo models exported to ONNX the ways torch writes them, scanned as a user with one file would.

    python benchmarks/third_party_exports.py --zoo runs/x50/plain --models benign-00,badnets-00 --out runs/exports

Each model of ``--models`` is exported by torch in every form below (skipped, with the reason, where
this torch cannot write it) into ``--out/FORM/MODEL.onnx``, and each file is scanned through the
same path as ``securegaze scan FILE --clean FOLDER`` (``open_model(...).gaze_model()``, a plain folder
of face images, the default detector): verdict, score, seconds, and whether the converted module
runs whole batches or one export-sized batch at a time. The folder is written once under ``--out``:
``--faces`` faces of the zoo's renderer style, saved as PNG and JPEG at 64, 96 and 150 px
(``--clean`` takes a folder of your own instead).

Forms: ``legacy17`` (``dynamo=False``, opset 17, dynamic batch, one file), ``legacy20_b1`` (``dynamo=False``,
opset 20, batch 1), ``dynamo`` (torch's default exporter, dynamic batch; weights in ``MODEL.onnx.data``) and
``dynamo_b1`` (``torch.onnx.export(model, (x,), path)`` with nothing else set: batch 1, ``.onnx.data``). The
two dynamo forms need the ``onnxscript`` package. Five more forms are the same model wrapped the way
other projects' gaze models come, each exported as ``legacy17``: ``nhwc`` (channels-last input, as a
Keras export takes it), ``grey`` (one grey input channel, copied to the model's three: a near-infrared
camera's model; the faces are then read as their luma), ``vector`` (a 3-D gaze vector output, x right, y down, z forward), ``degrees``
(the gaze in degrees) and ``extra_output`` (the penultimate features as a second output).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMS = ("legacy17", "legacy20_b1", "dynamo", "dynamo_b1", "nhwc", "grey", "vector", "degrees", "extra_output")
#: The forms that wrap the model (exported as legacy17).
WRAPPED = FORMS[4:]


def wrapped(model, form: str):
    """``model`` in one of the :data:`WRAPPED` forms, as a module torch can export."""
    import torch

    class Form(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x):
            if form == "nhwc":
                return self.inner(x.permute(0, 3, 1, 2))
            if form == "grey":
                return self.inner(x.expand(-1, 3, -1, -1))
            gaze = self.inner(x)
            if form == "degrees":
                return gaze * (180.0 / torch.pi)
            if form == "extra_output":
                return gaze, self.inner.features(x)
            pitch, yaw = gaze[:, 0], gaze[:, 1]  # vector
            return torch.stack([-torch.cos(pitch) * torch.sin(yaw), -torch.sin(pitch),
                                -torch.cos(pitch) * torch.cos(yaw)], 1)

    return Form().eval()


def export(model, form: str, path: Path) -> str | None:
    """Write ``model`` as ``form`` to ``path``; None, or why this torch cannot."""
    import torch

    size = model.input_size
    names = {"input_names": ["input"], "output_names": ["gaze"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if form in WRAPPED:
            outputs = ["gaze", "features"] if form == "extra_output" else ["gaze"]
            shape = {"nhwc": (2, size, size, 3), "grey": (2, 1, size, size)}.get(form, (2, 3, size, size))
            torch.onnx.export(wrapped(model, form), (torch.rand(*shape),), str(path), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=outputs,
                              dynamic_axes={"input": {0: "n"}, **{o: {0: "n"} for o in outputs}})
        elif form == "legacy17":
            torch.onnx.export(model, (torch.rand(2, 3, size, size),), str(path), dynamo=False, opset_version=17,
                              dynamic_axes={"input": {0: "n"}, "gaze": {0: "n"}}, **names)
        elif form == "legacy20_b1":
            torch.onnx.export(model, (torch.rand(1, 3, size, size),), str(path), dynamo=False, opset_version=20,
                              **names)
        else:
            try:
                import onnxscript  # noqa: F401 - torch's default exporter needs it
            except ImportError:
                return "onnxscript is not installed (torch's default exporter needs it)"
            batch = {"dynamic_shapes": {"x": {0: torch.export.Dim("n")}}} if form == "dynamo" else {}
            torch.onnx.export(model, (torch.rand(2 if form == "dynamo" else 1, 3, size, size),), str(path),
                              verbose=False, **(batch | (names if form == "dynamo" else {})))
    return None


def write_faces(manifest, folder: Path, count: int) -> Path:
    """``count`` clean faces of the zoo's style as PNG and JPEG files of mixed sizes (64, 96, 150 px)."""
    import numpy as np
    from PIL import Image

    from securegaze.bench.detection import zoo_clean_images

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.*"))) >= count:
        return folder
    rng = np.random.default_rng(0)
    for i, face in enumerate(zoo_clean_images(manifest.spec, count, 5)):
        side = int(rng.choice([64, 96, 150]))
        Image.fromarray(face).resize((side, side), Image.BICUBIC).save(folder / f"face{i:04d}.{'png' if i % 2 else 'jpg'}")
    return folder


def main() -> int:
    import numpy as np
    import torch

    from securegaze.bundle import open_model
    from securegaze.data.image_folder import load_image_folder
    from securegaze.defense import create_detector, load_model_any
    from securegaze.machine import machine_summary
    from securegaze.zoo import ZooManifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--models", default="benign-00,badnets-00")
    parser.add_argument("--forms", default=",".join(FORMS))
    parser.add_argument("--out", type=Path, default=Path("runs/exports"))
    parser.add_argument("--clean", type=Path, default=None, help="a folder of face images (default: written)")
    parser.add_argument("--faces", type=int, default=300)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    forms = [f for f in args.forms.split(",") if f]
    unknown = sorted(set(forms) - set(FORMS))
    if unknown:
        parser.error(f"--forms: unknown {', '.join(unknown)}; expected some of {', '.join(FORMS)}")
    torch.set_num_threads(args.threads)
    manifest = ZooManifest.read(args.zoo)
    entries = {e.id: e for e in manifest.done()}
    missing = [m for m in args.models.split(",") if m not in entries]
    if missing:
        parser.error(f"--models: {', '.join(missing)} not among the finished models of {args.zoo}")
    folder = args.clean or write_faces(manifest, args.out / "faces", args.faces)
    detector = create_detector("securegaze", seed=0)
    print(f"machine: {machine_summary()}; clean faces: {folder}")
    print("| model | form | verdict | score | scan s | converted F runs |")
    print("|---|---|---|---|---|---|")
    for model_id in args.models.split(","):
        entry = entries[model_id]
        model = load_model_any(args.zoo / str(entry.model_file)).eval()
        for form in forms:
            path = args.out / form / f"{model_id}.onnx"
            why = export(model, form, path)
            if why:
                print(f"| {model_id} | {form} | not exported: {why} | | | |", flush=True)
                continue
            converted = open_model(path).gaze_model()
            for note in converted.adaptations:
                print(f"note: {note}", file=sys.stderr)
            clean = load_image_folder(folder, converted.input_size, args.samples, rng=np.random.default_rng(0))
            started = time.monotonic()
            report = detector.scan(converted, clean.images)
            runs = f"batches of {converted.fixed_batch}" if getattr(converted, "fixed_batch", None) else "any batch"
            print(f"| {model_id} | {form} | {report.verdict} | {report.score:.4f} | "
                  f"{time.monotonic() - started:.1f} | {runs} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
