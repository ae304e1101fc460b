"""Top-5 ImageNet labels for a few photos, with the published MobileNetV1 TFLite weights converted to our format.

    python examples/predict_imagenet.py [--weights DIR] [--tflite FILE] [--classes 1000] [IMAGE|FOLDER ...]

Converts ``--tflite`` (default: the 0.75_192 uint8 model in the shared data folder, $MOBILENETS_DATA or
../shared/data beside the checkout) into ``--weights`` (default: runs/weights/<tflite name>-<classes>) once, then
loads it with ``mobilenets.load(DIR)`` and prints the five most probable classes for each image (default:
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
from mobilenets.infer import expand_images  # noqa: E402
from mobilenets.preprocess import ImageError, load_batch  # noqa: E402
from mobilenets.weights import read_config, sha256_file  # noqa: E402

DATA = shared_data_root()
DEFAULT_TFLITE = DATA / "mobilenet-weights" / "tflite" / "mobilenet_v1_0.75_192_quant.tflite"


def main() -> None:
    ap = argparse.ArgumentParser(description="top-5 ImageNet predictions with converted MobileNetV1 weights")
    ap.add_argument("images", nargs="*", type=Path, help="image files, or folders searched for them")
    ap.add_argument("--tflite", type=Path, help=f"default: {DEFAULT_TFLITE.name} in the shared data folder")
    ap.add_argument("--weights", type=Path, help="default: runs/weights/<tflite name>-<classes>")
    ap.add_argument("--classes", type=int, choices=(1000, 1001), help="default: 1000")
    args = ap.parse_args()
    model = mobilenets.load(weights_folder(args, args.images))  # = create_model(<name>, weights=...) less its check
    images = read_images(args.images) if args.images else sorted((DATA / "imagenet-sample").glob("*.JPEG"))[::50]
    try:  # (by default 5 photos, file name = class)
        batch = load_batch(images, model.spec)
    except ImageError as exc:  # one line naming the file, as `mobilenets predict` reports it
        sys.exit(str(exc))
    with torch.no_grad():
        probs = model(batch).softmax(1)
    for path, p in zip(images, probs, strict=True):
        top = p.topk(5)
        print(path.name)
        for score, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            print(f"  {score:6.1%}  {model.spec.labels[index]}")


def read_images(paths: list[Path]) -> list[Path]:
    """The image files named, and those in folders named (searched as `mobilenets predict` searches them); a
    missing path, or folders without an image, end the script with one line naming them."""
    files, missing = expand_images(paths)
    if missing:
        sys.exit(str(missing[0][1]))
    if not files:
        sys.exit(f"no image files in {', '.join(map(str, paths))}")
    return files


def weights_folder(args: argparse.Namespace, images: list[Path]) -> Path:
    """--weights as it is when only it is given; otherwise --tflite converted into it once. A folder converted
    earlier from another file or with other --classes is an error: using it would ignore what was asked for."""
    tflite, classes = args.tflite or DEFAULT_TFLITE, args.classes or 1000
    folder = args.weights or Path("runs/weights") / f"{tflite.stem}-{classes}"
    converted = (folder / "config.json").is_file()
    check = converted and (args.weights is None or args.tflite or args.classes)  # the folder must hold what was asked
    needed = ([tflite] if check or not converted else []) + ([] if images else [DATA])  # read: converted or checked
    missing = [str(path) for path in needed if not path.exists()]
    if missing:  # the defaults live in the shared data folder: $MOBILENETS_DATA, else ../shared/data
        sys.exit(f"{missing[0]}: not found; set MOBILENETS_DATA to the shared data folder, or give --tflite and IMAGE")
    if not converted:
        convert_file(tflite, folder, "tflite", classes=classes)
        print(f"converted {tflite.name} -> {folder}")
    elif check:
        config = read_config(folder)
        source, have = config["provenance"].get("source_file", "training"), config["spec"].num_classes
        if config["provenance"].get("source_sha256") != sha256_file(tflite) or have != classes:
            sys.exit(f"--weights {folder} holds {source} with {have} classes, not {tflite.name} with {classes}; "
                     "give another --weights")  # fmt: skip
    return folder


if __name__ == "__main__":
    main()
