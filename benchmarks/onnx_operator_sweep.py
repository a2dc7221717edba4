"""Benchmark: which layers of a third-party gaze model survive the ONNX -> PyTorch conversion the scan needs.

    python benchmarks/onnx_operator_sweep.py [--opsets 17,18,19,20] [--exporter legacy|dynamo] [--out DIR]

Each case is a small gaze model (a 3x3 convolution, the layer under test, spatial mean, a linear
head to (pitch, yaw)) exported by torch (its legacy exporter, or with ``--exporter dynamo`` its
default one, which needs the ``onnxscript`` package) at each opset with a dynamic batch, then
read the way ``securegaze scan`` reads a bare ``.onnx`` (``open_model(path).bundle().to_torch()``,
which checks the converted module against ONNX Runtime within 1e-4 rad and its gradient to the
image). Prints one line per failure (the conversion's own error line) and a table of counts; a
case that torch cannot export at an opset is counted apart. Nothing is trained: the check is of the
graph, so untrained weights do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = 32


def cases() -> dict:
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Fn(nn.Module):
        def __init__(self, f) -> None:
            super().__init__()
            self.f = f

        def forward(self, z):
            return self.f(z)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, z):
            tokens = z.flatten(2).transpose(1, 2)
            return self.a(tokens, tokens, tokens)[0].mean(1)

    return {
        "GELU": nn.GELU(), "GELU (tanh)": nn.GELU(approximate="tanh"), "SiLU": nn.SiLU(), "Hardswish": nn.Hardswish(),
        "Mish": nn.Mish(), "LeakyReLU": nn.LeakyReLU(0.1), "ELU": nn.ELU(), "PReLU": nn.PReLU(8), "SELU": nn.SELU(),
        "Hardsigmoid": nn.Hardsigmoid(), "ReLU6": nn.ReLU6(), "Softplus": nn.Softplus(), "Tanhshrink": nn.Tanhshrink(),
        "GroupNorm": nn.GroupNorm(2, 8), "InstanceNorm2d": nn.InstanceNorm2d(8, affine=True),
        "LayerNorm over channels": Fn(lambda z: F.layer_norm(z.permute(0, 2, 3, 1), (8,)).permute(0, 3, 1, 2)),
        "AdaptiveMaxPool2d(1)": nn.AdaptiveMaxPool2d(1), "AdaptiveAvgPool2d(1)": nn.AdaptiveAvgPool2d(1),
        "MaxPool2d": nn.MaxPool2d(2), "AvgPool2d (ceil_mode)": nn.AvgPool2d(3, 2, ceil_mode=True), "LPPool2d": nn.LPPool2d(2, 2),
        "interpolate bilinear": Fn(lambda z: F.interpolate(z, scale_factor=0.5, mode="bilinear", align_corners=False)),
        "interpolate nearest": Fn(lambda z: F.interpolate(z, size=(16, 16), mode="nearest")),
        "PixelShuffle": nn.Sequential(nn.Conv2d(8, 32, 1), nn.PixelShuffle(2)),
        "PixelUnshuffle": nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(32, 8, 1)),
        "MultiheadAttention": Attention(), "F.normalize": Fn(lambda z: F.normalize(z, dim=1)),
        "clamp": Fn(lambda z: z.clamp(-1, 1)), "max over a dim": Fn(lambda z: z.flatten(2).max(2).values),
        "softmax pooling": Fn(lambda z: (z.flatten(2).softmax(2) * z.flatten(2)).sum(2)),
        "ConvTranspose2d": nn.ConvTranspose2d(8, 8, 2, stride=2), "depthwise conv": nn.Conv2d(8, 8, 3, groups=8, padding=1),
        "dilated conv": nn.Conv2d(8, 8, 3, dilation=2, padding=2), "ReflectionPad2d": nn.ReflectionPad2d(1),
        "squeeze-excite gate": Fn(lambda z: z * torch.sigmoid(z.mean((2, 3), keepdim=True))),
        "std": Fn(lambda z: z.flatten(2).std(2)), "var_mean": Fn(lambda z: torch.var_mean(z.flatten(2), 2)[0]),
        "cumsum": Fn(lambda z: z.flatten(2).cumsum(2)[..., -1]), "einsum": Fn(lambda z: torch.einsum("nchw->nc", z)),
        "topk": Fn(lambda z: z.flatten(2).topk(3, dim=2).values.mean(2)), "logsumexp": Fn(lambda z: z.flatten(2).logsumexp(2)),
        "pow, sqrt": Fn(lambda z: (z ** 2 + 1).sqrt()), "abs, sign": Fn(lambda z: z.abs() * torch.sign(z)),
        "erf": Fn(lambda z: torch.erf(z)), "atan2": Fn(lambda z: torch.atan2(z, z + 2)),
        "where": Fn(lambda z: torch.where(z > 0, z, 0.1 * z)),
        "unfold": Fn(lambda z: F.unfold(z, 2, stride=2).mean(2)[:, :8]),
    }


def gaze_model(layer):
    from torch import nn

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.layer, self.head = nn.Conv2d(3, 8, 3, padding=1), layer, nn.Linear(8, 2)

        def forward(self, x):
            z = self.layer(self.stem(x))
            return self.head(z.mean((2, 3)) if z.dim() == 4 else z)

    return Model().eval()


def main() -> int:
    import torch

    from securegaze.bundle import open_model
    from securegaze.machine import machine_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opsets", default="17,18,19,20")
    parser.add_argument("--exporter", choices=("legacy", "dynamo"), default="legacy")
    parser.add_argument("--out", type=Path, default=None, help="keep the exported files here (default: a temp dir)")
    args = parser.parse_args()
    dynamo = args.exporter == "dynamo"
    if dynamo:
        try:
            import onnxscript  # noqa: F401 - torch's default exporter needs it
        except ImportError:
            parser.error("--exporter dynamo needs the onnxscript package (pip install onnxscript)")
    opsets = [int(o) for o in args.opsets.split(",") if o]
    torch.set_num_threads(1)
    print(f"machine: {machine_summary()}, torch {torch.__version__}, {args.exporter} exporter")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for opset in opsets:
            failed, unexported, total = [], [], 0
            for name, layer in cases().items():
                torch.manual_seed(0)
                path = out / f"{''.join(c if c.isalnum() else '_' for c in name)}_{opset}.onnx"
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        batch = ({"dynamic_shapes": {"x": {0: torch.export.Dim("n")}}} if dynamo else
                                 {"dynamic_axes": {"input": {0: "n"}, "gaze": {0: "n"}}})
                        torch.onnx.export(gaze_model(layer), (torch.rand(2, 3, SIZE, SIZE),), str(path), dynamo=dynamo,
                                          opset_version=opset, input_names=["input"], output_names=["gaze"], **batch)
                except Exception as exc:  # noqa: BLE001 - what this torch cannot write is counted apart
                    unexported.append(f"{name} ({str(exc).splitlines()[0][:60]})")
                    continue
                total += 1
                try:
                    open_model(path).bundle().to_torch()
                except Exception as exc:  # noqa: BLE001 - the conversion's own error line is the result
                    failed.append(f"{name}: {exc}")
            for line in failed:
                print(f"opset {opset} failed: {line}", flush=True)
            rows.append((opset, total, total - len(failed), unexported))
    print("| opset | cases exported | converted and checked | not exported by torch |")
    print("|---|---|---|---|")
    for opset, total, ok, unexported in rows:
        print(f"| {opset} | {total} | {ok} | {', '.join(unexported) or '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
