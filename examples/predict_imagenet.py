"""Top-5 ImageNet labels for a few photos, with the published MobileNetV1 TFLite weights converted to our format.

    python examples/predict_imagenet.py [--weights DIR] [--tflite FILE] [--classes 1000] [IMAGE ...]

Converts ``--tflite`` (default: the 0.75_192 uint8 model in the shared data folder, $MOBILENETS_DATA or
../shared/data beside the checkout) into ``--weights`` once, then loads it with
``mobilenets.load(DIR)`` and prints the five most probable classes for each image (default:
five imagenet-sample photos, named after their true class). The labels ship with the package (``mobilenets.labels``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import mobilenets  # noqa: E402
from mobilenets.convert import convert_file  # noqa: E402
from mobilenets.data import shared_data_root  # noqa: E402
from mobilenets.preprocess import load_batch  # noqa: E402

DATA = shared_data_root()
DEFAULT_TFLITE = DATA / "mobilenet-weights" / "tflite" / "mobilenet_v1_0.75_192_quant.tflite"


def main() -> None:
    ap = argparse.ArgumentParser(description="top-5 ImageNet predictions with converted MobileNetV1 weights")
    ap.add_argument("images", nargs="*", type=Path)
    ap.add_argument("--tflite", type=Path, default=DEFAULT_TFLITE)
    ap.add_argument("--weights", type=Path, default=Path("runs/weights/mobilenet_v1_075_192_quant"))
    ap.add_argument("--classes", type=int, choices=(1000, 1001), default=1000)
    args = ap.parse_args()
    needed = ([] if (args.weights / "config.json").is_file() else [args.tflite]) + ([] if args.images else [DATA])
    missing = [str(path) for path in needed if not path.exists()]
    if missing:  # the defaults live in the shared data folder: $MOBILENETS_DATA, else ../shared/data
        sys.exit(f"{missing[0]}: not found; set MOBILENETS_DATA to the shared data folder, or give --tflite and IMAGE")
    if not (args.weights / "config.json").is_file():
        convert_file(args.tflite, args.weights, "tflite", classes=args.classes)
        print(f"converted {args.tflite.name} -> {args.weights}")
    model = mobilenets.load(args.weights)  # = create_model(<name or spec>, weights=...) without the name check
    images = args.images or sorted((DATA / "imagenet-sample").glob("*.JPEG"))[::50]  # 5 photos, file name = class
    with torch.no_grad():
        probs = model(load_batch(images, model.spec)).softmax(1)
    for path, p in zip(images, probs, strict=True):
        top = p.topk(5)
        print(path.name)
        for score, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            print(f"  {score:6.1%}  {model.spec.labels[index]}")


if __name__ == "__main__":
    main()
