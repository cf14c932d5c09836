"""ImageNet top-1 / top-5 of a published or converted checkpoint, beside the figure its release published.

    python tools/eval_imagenet.py resnet50_ssn_8x32 /data/imagenet/val          # a catalogue name (ssn://...)
    python tools/eval_imagenet.py ssn_8x2_75.848.pth /data/imagenet/val         # a release file
    python tools/eval_imagenet.py converted/ssn_r50.pth /data/imagenet/val      # tools/convert_checkpoint.py --to torch

The evaluation is the releases': the image resized to 256 on its shorter side, the 224x224 centre crop, ImageNet's
mean and std. VAL_DIR is an ImageFolder whose sorted class folders are the model's classes in order (ImageNet's
synset folders, as valprep.sh makes them); class folders may be empty, so a subset of the classes keeps its labels.
The first thing to do after a conversion: the figures should match the release's to about 0.1.
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader

from ssn_plugins import model_zoo
from ssn_plugins.checkpoints import ConversionError, load_checkpoint_file, read_published
from ssn_plugins.cli import tool_parser
from ssn_plugins.datasets.imagenet import UnreadableImage, checked_image_loader, count_correct, eval_transform
from ssn_plugins.models import ResNet
from ssn_plugins.pretrained import from_pretrained, load_converted


#: why this tool offers no full unpickling: what it evaluates loads weights-only
NO_TRUST = ("this tool reads the releases' files and tools/convert_checkpoint.py's --to torch files, which load "
            "weights-only (a detectron2 .pkl is for MODEL.WEIGHTS)")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def load_model(source: str, progress: bool = True):
    """``(model in eval mode, catalogue entry or None)`` for a catalogue name, a release file or a converted file."""
    name = source[len(model_zoo.SCHEME):] if source.startswith(model_zoo.SCHEME) else source
    if name in model_zoo.catalogue():
        return from_pretrained(name, progress=progress), model_zoo.get_entry(name)
    path = Path(source)
    if not path.is_file():
        raise ConversionError(f"{source}: neither a file nor a catalogue name ({', '.join(model_zoo.catalogue())})")
    loaded = load_checkpoint_file(path, how_to_trust=NO_TRUST)
    if isinstance(loaded, dict) and isinstance(loaded.get("meta"), dict) and "ssn_plugins" in loaded["meta"]:
        model = load_converted(loaded, source=str(path))
    else:
        published = read_published(loaded)
        for line in published.report:
            print(line)
        model = ResNet.from_architecture(published.architecture())
        model.load_state_dict(published.state_dict)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    entry = next((e for e in model_zoo.catalogue().values() if e.md5 == md5), None)  # a release file we know
    return model.eval(), entry


@torch.no_grad()
def evaluate(model, loader, progress: bool = True):
    """``(top-1 %, top-5 %, images)`` over ``loader``."""
    try:
        from tqdm import tqdm
        batches = tqdm(loader, desc="evaluating", unit="batch", file=sys.stderr, disable=not progress or None)
    except ImportError:
        batches = loader
    correct1 = correct5 = total = 0
    for images, labels in batches:
        top1, top5 = count_correct(model(images), labels)
        correct1, correct5, total = correct1 + top1, correct5 + top5, total + labels.numel()
    return 100 * correct1 / total, 100 * correct5 / total, total


def run(argv=None) -> dict:
    parser = tool_parser(__doc__, "eval_imagenet")
    parser.add_argument("checkpoint", help="a catalogue name (MODEL_ZOO.md), a release file or a converted .pth")
    parser.add_argument("val_dir", type=Path, help="ImageFolder of the validation images, one folder per class")
    parser.add_argument("--batch-size", type=positive_int, default=50)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=224, help="the centre crop (resized to size*256/224)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        model, entry = load_model(args.checkpoint, progress=not args.no_progress)
    except (ConversionError, model_zoo.ModelZooError) as e:
        sys.exit(f"eval_imagenet: {e}")
    if not args.val_dir.is_dir():
        sys.exit(f"eval_imagenet: {args.val_dir} is not a folder")
    try:
        dataset = torchvision.datasets.ImageFolder(args.val_dir, eval_transform(args.image_size),
                                                   loader=checked_image_loader, allow_empty=True)
    except FileNotFoundError as e:
        sys.exit(f"eval_imagenet: {args.val_dir}: {e}")
    outputs = model.fc.out_features if hasattr(model, "fc") else None
    if outputs != len(dataset.classes):
        sys.exit(f"eval_imagenet: {args.val_dir} has {len(dataset.classes)} class folders, the model {outputs} "
                 f"outputs: the sorted class folders must be the model's classes (keep empty folders for a subset)")
    if not len(dataset):
        sys.exit(f"eval_imagenet: no images under {args.val_dir}")
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    try:
        top1, top5, images = evaluate(model, loader, progress=not args.no_progress)
    except UnreadableImage as e:  # (a worker's re-raise carries its traceback: keep our line)
        lines = [line for line in str(e).splitlines() if "not a readable image" in line]
        sys.exit(f"eval_imagenet: {lines[-1].split('UnreadableImage: ')[-1].strip() if lines else e}")
    result = {"checkpoint": args.checkpoint, "images": images, "top1": round(top1, 2), "top5": round(top5, 2),
              "published_top1": entry.top1 if entry else None, "published_top5": entry.top5 if entry else None}
    print(f"{args.checkpoint}: top-1 {top1:.2f} %, top-5 {top5:.2f} % on {images} images of {args.val_dir}")
    if entry is not None and entry.top1 is not None:
        print(f"published ({entry.release} release, ssn://{entry.name}): top-1 {entry.top1:.2f} %, "
              f"top-5 {entry.top5:.2f} %; difference {top1 - entry.top1:+.2f}")
    elif entry is not None:
        print(f"ssn://{entry.name}: the release published no ImageNet figure ({entry.note})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


def main(argv=None) -> None:
    """The command line: :func:`run`, which returns the result, with nothing returned (a console script exits 0)."""
    run(argv)


if __name__ == "__main__":
    main()
