"""The ASR a mitigation cannot go below: benign models under each backdoored model's trigger and target.

A trigger that covers part of the face (glasses over the eyes, tape on the brow) moves any model's
answer, and when the attacker's target gaze lies near where such answers land, some triggered faces
come within 5 deg of it with no backdoor at all. For every backdoored model of a zoo this prints the
ASR@5deg and AE that each benign model of the same zoo shows under that model's trigger, on that
model's own held-out test faces: the floor a mitigated model can be expected to reach
(docs/baselines.md, "Mitigation version 6").

    python benchmarks/benign_floor.py --zoo runs/b15/zoo
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from securegaze.attacks.metrics import evaluate_attack
from securegaze.attacks.runner import load_attack_run
from securegaze.defense.model_loading import load_model_any
from securegaze.zoo import ZooManifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("models", nargs="*", help="backdoored models (default: every one with an attack)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    manifest = ZooManifest.read(args.zoo)
    built = [e for e in manifest.entries if e.status == "done"]
    benign = {e.id: load_model_any(args.zoo / str(e.model_file)).eval() for e in built if e.attack == "benign"}
    if not benign:
        raise SystemExit(f"{args.zoo}: the zoo has no benign model to measure the floor with")
    names = args.models or [e.id for e in built if e.attack != "benign"]
    print(f"benign models: {', '.join(benign)}")
    for name in names:
        if not any(e.id == name for e in built):
            raise SystemExit(f"{args.zoo}: no built model {name!r} in the zoo's manifest")
        attack, test_set, faces = load_attack_run(args.zoo / name, None)
        floors = [evaluate_attack(model, attack, test_set, faces) for model in benign.values()]
        print(f"{name}: benign ASR@5deg {' / '.join(f'{m.asr:.1%}' for m in floors)}, "
              f"AE {' / '.join(f'{m.ae_deg:.1f}' for m in floors)} deg", flush=True)


if __name__ == "__main__":
    main()
