"""Command line: python -m classify train|evaluate|predict|export|compare."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from classify import RUNTIMES, ClassifyError
from classify.options import Parser, number

HELP = {
    "data": "ImageFolder root with train/ and valid/ (optional test/), or one folder of class folders",
    "out": "run folder to write the model bundle to",
    "model": "auto (lite2 on GPU; lite0+lite1+lite2 side by side on CPU), efficientnet_lite0|1|2 (offline), a timm name, tv:NAME "
             "(torchvision) or hf:ORG/NAME (Hugging Face)",
    "weights": "local state dict or .safetensors to start from instead of downloaded weights",
    "freeze": "auto | all (head only, on cached features) | partial (last stages + head) | none (full fine-tune)",
    "head": "auto (mlp when only the head trains, else linear) | linear | mlp (Linear-ReLU-Dropout-Linear)",
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
    "pick_epoch": "the weights kept: best (the highest valid accuracy) | last | auto (by strategy)",
    "valid_fraction": "valid share when DATA has no split of its own",
    "device": "auto | cpu | cuda",
    "resume": "carry on an interrupted run in --out",
    "mlflow": "also log to MLflow (optional tracking URI; needs platekit[mlflow])",
    "keep": "share of new in-menu photos (drawn like valid) the on-menu threshold keeps on the menu (0-1]",
    "not_on_menu": "a folder of photos that are none of the classes (any depth; other dishes work best): the "
                   "on-menu score learns to reject what looks like them",
}


# The valid range of every numeric RunConfig field, checked at the command line (0 keeps its "by strategy" meaning
# where the help says so). The upper bounds are far past any sensible run; they stop a typo from allocating for hours.
RANGES = {
    "image_size": number(int, 0, 1024), "epochs": number(int, 0, 10_000), "batch_size": number(int, 1, 4096),
    "lr": number(float, 0, 10, low_open=True), "backbone_lr_scale": number(float, 0, 10),
    "weight_decay": number(float, 0, 1), "warmup_epochs": number(float, 0, 10_000),
    "label_smoothing": number(float, 0, 1, high_open=True), "aug": number(float, 0, 1),
    "views": number(int, 0, 100), "patience": number(int, 0, 10_000), "seed": number(int, 0, 2**32 - 1),
    "valid_fraction": number(float, 0, 1, low_open=True, high_open=True), "examples_per_class": number(int, 0, 1000),
    "keep": number(float, 0, 1, low_open=True),
}
TOP_K_RANGE = number(int, 1, 1000)


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
            kind = RANGES.get(field.name) or (type(default) if default is not None else str)
            parser.add_argument(flag, type=kind, default=default, required=field.name == "data",
                                help=(HELP.get(field.name, "") + f" (default: {default})").strip())


def build_parser() -> argparse.ArgumentParser:
    from classify.compare import DEFAULT_OUT
    from classify.export import FORMATS, INT8_AGREEMENT
    from classify.predict import TOP_K

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
    evaluate.add_argument("--out", help="folder for confusion_matrix.png/.csv, per_class.csv, reliability.png "
                                        "(default: none); on a held-out split also the bundle's held_out.json")
    evaluate.add_argument("--unknown", metavar="DIR", help="photos that are none of the classes (any depth): how "
                                                           "many the on-menu score rejects")
    evaluate.add_argument("--runtime", choices=RUNTIMES, default="auto", help="as predict's; onnx-int8 measures "
                          "what the 8-bit copy costs on this split (its figures stay out of the bundle's card)")
    evaluate.add_argument("--against", metavar="TRAIN_DIR", help="also list the test photos with a near-twin "
                          "(perceptual hash within 10 bits) in this training folder: a leak")

    predict = commands.add_parser("predict", help="top-k classes for images")
    predict.add_argument("--model", required=True, help="run folder (model bundle)")
    predict.add_argument("images", nargs="+", help="image files, or folders (their images, recursively, in name order)")
    predict.add_argument("--top-k", type=TOP_K_RANGE, default=TOP_K,
                         help=f"classes per image, 1..1000 (default {TOP_K})")
    predict.add_argument("--json", action="store_true", help="print JSON lines: one object per image")
    predict.add_argument("--explain", metavar="OUT_DIR", help="also write a heat map of where the model looked "
                         "(Grad-CAM of the top class over the crop it saw) per image: OUT_DIR/<image name>.png")
    predict.add_argument("--runtime", choices=RUNTIMES, default="auto", help="auto: ONNX Runtime on a CPU (2x faster "
                         "for one image; the first run exports the model into the cache), PyTorch on a GPU; onnx or "
                         "torch: always that one; onnx-int8: an 8-bit copy calibrated on the bundle's examples (about "
                         "2x faster again, top class as float's on 97 %% of photos) (default auto)")

    export = commands.add_parser("export", help="ONNX or TorchScript (checked against PyTorch), a Hugging Face "
                                                "Space or a web app that runs in the browser")
    export.add_argument("--model", required=True, help="run folder (model bundle)")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--out", required=True, help="file to write, with FILE.json beside it; for space and web a "
                        "folder (outside the bundle; an existing one only if empty or an earlier export wrote it)")
    export.add_argument("--check-data", help="images to check agreement on (default: the bundle's examples)")
    export.add_argument("--push", metavar="USER/NAME", help="space: also create this Space and upload the folder "
                        "(token from HF_TOKEN or `hf auth login`)")
    export.add_argument("--ort-dir", metavar="DIR", help="web: copy onnxruntime-web's files from this dist/ folder "
                        "instead of loading them from the pinned CDN")
    export.add_argument("--int8", action="store_true", help="onnx and web: the model's 8-bit copy, as --runtime "
                        "onnx-int8 scores with (about 40 %% of the size; checked on its top class)")
    export.add_argument("--min-agreement", type=number(float, 0, 1), metavar="SHARE",
                        help="--int8: the least share of check images on which the 8-bit copy must name PyTorch's "
                        f"top class (default {INT8_AGREEMENT}; a small single-backbone model often reaches only 0.8)")

    compare = commands.add_parser("compare", help="train several models (or option values) and tabulate them")
    compare.add_argument("--models", help="comma-separated backbone names (default: --model)")
    compare.add_argument("--sweep", help="one training option and its values, e.g. aug=0,0.5,1")
    compare.add_argument("--compare-out", default=DEFAULT_OUT, help=f"folder for the runs, table CSV and chart "
                         f"(default {DEFAULT_OUT})")
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


# Photos of other dishes are what lets the on-menu score reject dishes it never saw (README "Not one of my dishes"); a
# run without them is told once, where a user looks.
NOT_ON_MENU_TIP = ("tip: photos of other dishes teach it to say \"not on the menu\" to dishes it never saw: "
                   "`python -m curate --workspace other-ws scrape --other-dishes 20 --menu WORKSPACE`, export, then "
                   "train again with --not-on-menu EXPORT")


def _train(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from classify.train import config_from_args, train

    console = Console(stderr=True)
    config = config_from_args(vars(args))
    result = train(config, progress=not args.quiet, log=lambda message: console.print(message, highlight=False))
    if not result.main_process:  # `accelerate launch`: the main process prints the summary
        return 0
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
          f"({m['strategy']}, kept epoch {m['best_epoch']}/{m['epochs_run']}, {m['train_seconds']:.0f} s)")
    if config.not_on_menu is None:
        console.print(NOT_ON_MENU_TIP, highlight=False)
    return 0


def _evaluate(args) -> int:
    from classify.evaluate import evaluate

    metrics = evaluate(args.model, args.data, tta=args.tta, progress=not args.json, out=args.out,
                       unknown=args.unknown, against=args.against, runtime=args.runtime)
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
    print(f"calibration: ECE {metrics['ece']:.4f}  NLL {metrics['nll']:.4f}  (temperature {metrics['temperature']:g}; "
          f"uncalibrated ECE {metrics['ece_uncalibrated']:.4f}; a perfectly calibrated model would read about "
          f"{metrics['ece_if_calibrated']:.3f} on {metrics['n']} photos)")
    if "on_menu_kept" in metrics:
        unknown = metrics.get("unknown")
        print(f"on the menu: {metrics['on_menu_kept']:.1%} of these photos kept" + (
            f"; unknown photos: {unknown['rejected']:.1%} of {unknown['n']} rejected, AUROC {unknown['auroc']:.4f}"
            if unknown else ""))
    if args.out:
        print("held-out figures written to the bundle's held_out.json (shown on the demo's card)" if metrics["held_out"]
              else "not written to the bundle: this split is one the model trained or picked its epoch on")
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
    predictor = classify.load(args.model, runtime=args.runtime)
    if args.explain:
        from classify.explain import Explainer, overlay_targets, save_overlay
        targets, explainer = overlay_targets(args.explain, paths), Explainer(predictor)  # refuse before writing
    failed = 0
    for index, path in enumerate(paths):
        try:
            prediction = predictor.prediction(path, k=args.top_k)
            if args.explain:
                save_overlay(explainer.explain(path, k=args.top_k).overlay(), targets[index])
        except ClassifyError as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({"image": path, **prediction.to_json()}))
        else:
            guesses = ", ".join(f"{c} {p:.2f}" for c, p in prediction.top[:2])
            print(f"{path}: " + (", ".join(f"{c} {p:.3f}" for c, p in prediction.top) if prediction.on_menu
                                 else f"not on the menu (closest: {guesses})"))
    return 1 if failed else 0


def _export(args) -> int:
    from classify.export import INT8_AGREEMENT, export

    if args.push and args.format != "space":
        raise ClassifyError("--push is for --format space")
    if args.ort_dir and args.format != "web":
        raise ClassifyError("--ort-dir is for --format web")
    if args.min_agreement is not None and not args.int8:
        raise ClassifyError("--min-agreement is for --int8")
    report = export(args.model, args.format, args.out, check_data=args.check_data, push=args.push,
                    ort_dir=args.ort_dir, int8=args.int8,
                    min_agreement=INT8_AGREEMENT if args.min_agreement is None else args.min_agreement)
    if args.format in ("space", "web"):
        print(f"wrote {report.path} ({report.format}: {report.files} files, {report.size_bytes / 1e6:.1f} MB)"
              + (f"; ONNX{' (int8)' if args.int8 else ''} max |softmax difference| vs PyTorch "
                 f"{report.onnx_difference:.2e}" if report.onnx_difference is not None else "")
              + (f"; pushed to {report.url}" if report.url else ""))
        return 0
    if report.top_class_agreement is not None:
        print(f"wrote {report.path} ({report.format}, int8); PyTorch's top class on {report.n_images} real images: "
              f"{100 * report.top_class_agreement:.0f} %; max |softmax difference| {report.max_abs_difference:.2e}")
        return 0
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
