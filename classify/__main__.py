"""Command line: python -m classify train|evaluate|predict|export|compare."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from classify import ClassifyError
from classify.options import Parser

HELP = {
    "data": "ImageFolder root with train/ and valid/ (optional test/), or one folder of class folders",
    "out": "run folder to write the model bundle to",
    "model": "auto (lite2 on GPU, lite0 on CPU), efficientnet_lite0|1|2 (offline), a timm name, tv:NAME "
             "(torchvision) or hf:ORG/NAME (Hugging Face)",
    "weights": "local state dict or .safetensors to start from instead of downloaded weights",
    "freeze": "auto | all (head only, on cached features) | partial (last stages + head) | none (full fine-tune)",
    "head": "linear | mlp (Linear-ReLU-Dropout-Linear)",
    "image_size": "input side in pixels (0: the backbone's own)",
    "epochs": "epochs (0: by strategy: all 25, partial 12, none 15 on a CPU, 40 on a GPU)",
    "batch_size": "images per training step",
    "weight_decay": "AdamW weight decay",
    "warmup_epochs": "linear warm-up before the cosine schedule",
    "seed": "seed for splits, augmentation and initialization",
    "examples_per_class": "example images copied into the bundle for the demo",
    "lr": "head learning rate (AdamW)",
    "backbone_lr_scale": "backbone learning rate = lr x this (0: 0.3 for a full fine-tune, 0.1 for partial)",
    "schedule": "cosine (with warmup) | onecycle | plateau",
    "label_smoothing": "label smoothing of the cross-entropy loss",
    "aug": "augmentation strength 0..1 (random-resized crop, flip, colour jitter)",
    "views": "augmented views cached per image for frozen layers (0: by strategy and memory)",
    "feature_cache": "folder keeping head-only features by image content, so a retrain computes only new images "
                     "(auto: $PLATEKIT_CACHE, else ~/.cache/platekit; none: off)",
    "patience": "stop after this many epochs without a better valid accuracy (0: all, and anything on a GPU, never "
                "stops early; partial and none on a CPU after 5)",
    "valid_fraction": "valid share when DATA has no split of its own",
    "device": "auto | cpu | cuda",
    "resume": "carry on an interrupted run in --out",
    "mlflow": "also log to MLflow (optional tracking URI; needs platekit[mlflow])",
}


def add_run_options(parser: argparse.ArgumentParser, skip=()) -> None:
    """One option per RunConfig field, its default read from the dataclass."""
    from classify.train import RunConfig

    for field in fields(RunConfig):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        if field.name == "resume":
            parser.add_argument(flag, action="store_true", help=HELP.get(field.name))
        elif field.name == "mlflow":
            parser.add_argument(flag, nargs="?", const="", default=None, metavar="URI", help=HELP.get(field.name))
        else:
            kind = type(default) if default is not None else str
            parser.add_argument(flag, type=kind, default=default, required=field.name == "data",
                                help=(HELP.get(field.name, "") + f" (default: {default})").strip())


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m classify", description="Train, evaluate and use a food classifier.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fine-tune a pretrained backbone on an ImageFolder set")
    add_run_options(train)
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    evaluate = commands.add_parser("evaluate", help="score a model bundle on a labelled split")
    evaluate.add_argument("--model", required=True, help="run folder (model bundle)")
    evaluate.add_argument("--data", required=True, help="ImageFolder split, or a root (its test/, else valid/)")
    evaluate.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--out", help="folder for confusion_matrix.png/.csv, per_class.csv (default: none)")
    evaluate.add_argument("--against", metavar="TRAIN_DIR", help="also list the test photos with a near-twin "
                          "(perceptual hash within 10 bits) in this training folder: a leak")

    predict = commands.add_parser("predict", help="top-k classes for images")
    predict.add_argument("--model", required=True, help="run folder (model bundle)")
    predict.add_argument("images", nargs="+", help="image files, or folders (their images, recursively, in name order)")
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("--json", action="store_true", help="print JSON lines: one object per image")
    predict.add_argument("--explain", metavar="OUT_DIR", help="also write a heat map of where the model looked "
                         "(Grad-CAM of the top class over the crop it saw) per image: OUT_DIR/<image name>.png")

    export = commands.add_parser("export", help="ONNX or TorchScript, checked against PyTorch")
    export.add_argument("--model", required=True, help="run folder (model bundle)")
    export.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    export.add_argument("--out", required=True, help="file to write, with FILE.json beside it (outside the bundle; "
                                                     "an existing file only if an earlier export wrote it)")
    export.add_argument("--check-data", help="images to check agreement on (default: the bundle's examples)")

    compare = commands.add_parser("compare", help="train several models (or option values) and tabulate them")
    compare.add_argument("--models", help="comma-separated backbone names (default: --model)")
    compare.add_argument("--sweep", help="one training option and its values, e.g. aug=0,0.5,1")
    compare.add_argument("--compare-out", default="runs/compare", help="folder for the runs, table CSV and chart")
    add_run_options(compare, skip=("out", "resume", "mlflow"))
    return parser


def main(argv=None) -> int:
    from safetensors import SafetensorError

    warnings.filterwarnings("ignore")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ClassifyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, SafetensorError) as error:  # a full disk or no write permission while writing results
        detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        where = f" ({error.filename})" if isinstance(error, OSError) and error.filename else ""
        print(f"error: {detail}{where}" + ("; free some space and re-run (train: add --resume)"
                                            if "No space left" in detail else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; `train --resume` carries on from the last finished epoch", file=sys.stderr)
        return 130


def _train(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from classify.train import config_from_args, train

    console = Console(stderr=True)
    config = config_from_args(vars(args))
    result = train(config, progress=not args.quiet, log=lambda message: console.print(message, highlight=False))
    table = Table(title="class balance (readable images)")
    for column in ("class", "train", "valid"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, (n_train, n_valid) in result.class_counts.items():
        table.add_row(name, str(n_train), str(n_valid))
    console.print(table)
    if result.skipped:
        console.print(f"skipped {len(result.skipped)} unreadable image(s)")
    m = result.metrics
    print(f"{result.run_dir}: valid accuracy {m['accuracy']:.3f}  top-5 {m['top5']:.3f}  "
          f"average position {m['average_position']:.3f}  macro F1 {m['macro_f1']:.3f}  "
          f"({m['strategy']}, best epoch {m['best_epoch']}/{m['epochs_run']}, {m['train_seconds']:.0f} s)")
    return 0


def _evaluate(args) -> int:
    from classify.evaluate import evaluate

    metrics = evaluate(args.model, args.data, tta=args.tta, progress=not args.json, out=args.out, against=args.against)
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k != "confusion_matrix"} |
                         {"confusion_matrix": metrics["confusion_matrix"]}))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{metrics['split']}: {metrics['n']} images")
    for column in ("class", "precision", "recall", "F1", "avg position", "n"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in metrics["per_class"].items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      "-" if row["average_position"] is None else f"{row['average_position']:.2f}", str(row["support"]))
    Console().print(table)
    for line in metrics["skipped"]:
        print(f"skipped {line}", file=sys.stderr)
    for twin in metrics.get("near_twins", ()):
        print(f"near-twin in train: {twin['test']} ~ {twin['train']} ({twin['bits']} bits)")
    if args.against is not None:
        print(f"{metrics['near_twins_in_train']} test photos have a near-twin in {args.against}")
    print(f"accuracy {metrics['accuracy']:.4f}  top-5 {metrics['top5']:.4f}  average position "
          f"{metrics['average_position']:.4f}  macro F1 {metrics['macro_f1']:.4f}  (n={metrics['n']})")
    return 0


def _predict(args) -> int:
    import classify

    from classify.data import images_in

    paths = []
    for given in args.images:
        if Path(given).is_dir():
            found = images_in(Path(given))
            if not found:
                raise ClassifyError(f"no images in folder {given}")
            paths += [str(p) for p in found]
        else:
            paths.append(given)
    predictor = classify.load(args.model)
    if args.explain:
        from classify.explain import Explainer, overlay_targets, save_overlay
        targets, explainer = overlay_targets(args.explain, paths), Explainer(predictor)  # refuse before writing
    failed = 0
    for index, path in enumerate(paths):
        try:
            if not args.explain:
                top = predictor.predict(path, k=args.top_k)
            else:
                explanation = explainer.explain(path, k=args.top_k)
                top = explanation.predictions
                save_overlay(explanation.overlay(), targets[index])
        except ClassifyError as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({"image": path, "predictions": [{"label": c, "probability": round(p, 6)} for c, p in top]}))
        else:
            print(f"{path}: " + ", ".join(f"{c} {p:.3f}" for c, p in top))
    return 1 if failed else 0


def _export(args) -> int:
    from classify.export import export

    report = export(args.model, args.format, args.out, check_data=args.check_data)
    print(f"wrote {report.path} ({report.format}); max |softmax difference| vs PyTorch on {report.n_images} "
          f"real images: {report.max_abs_difference:.2e} (< {report.tolerance:g}: ok)")
    return 0


def _compare(args) -> int:
    from classify.compare import compare

    table = compare(vars(args), models=args.models, sweep=args.sweep, out=args.compare_out, progress=True)
    from rich.console import Console
    from rich.table import Table

    view = Table(title="compare")
    for column in ("run", "accuracy", "top-5", "avg position", "seconds"):
        view.add_column(column, justify="left" if column == "run" else "right")
    for row in table:
        view.add_row(row["run"], f"{row['accuracy']:.3f}", f"{row['top5']:.3f}", f"{row['average_position']:.3f}",
                     f"{row['seconds']:.0f}")
    Console().print(view)
    print(f"table and chart in {args.compare_out}")
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "predict": _predict, "export": _export, "compare": _compare}

if __name__ == "__main__":
    sys.exit(main())
