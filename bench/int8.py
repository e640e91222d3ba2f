"""Claim: `--runtime onnx-int8` (classify/runtime.py: an 8-bit copy of the bundle's model, calibrated on the bundle's
own examples/) scores about twice the images a second of the float ONNX model on the CPU, and changes what users see
little: food-dev-extra accuracy, the top class's agreement with float, the on-menu share kept, non-food rejected, ECE.

Both runtimes load the same bundle through `classify.load` (the real path: the int8 copy is made on its first load,
in an empty cache here, and timed), score the same decoded photos of food-dev-extra (1,500) and nonfood-dev (468),
and time forward passes of 16 and of 1 decoded image side by side, interleaved round by round.
  python bench/int8.py [--model RUN_DIR] [--rounds 7] [--no-record]
Default model: the CPU default (`classify train` with no flags) trained on food-dev here first.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from record import FOOD_DEV, append, machine, table  # noqa: E402

SHARED = FOOD_DEV.parent


def decoded(predictor, folder: Path, classes: list[str] | None):
    """(uint8 N x 3 x S x S, labels or None): every photo of folder (per class with `classes`), decoded once."""
    import torch
    from classify import data as D

    if classes is None:
        paths, labels = D.images_in(folder), None
    else:
        pairs = [(path, i) for i, name in enumerate(classes) for path in D.images_in(folder / name)]
        paths, labels = [p for p, _ in pairs], np.array([i for _, i in pairs])
    return torch.stack([predictor.preprocess(path) for path in paths]), labels


def scored(predictor, extra, extra_y, nonfood) -> dict:
    from classify.calibration import expected_calibration_error

    features, logits = predictor.features_and_logits(extra)
    probabilities = predictor.probabilities_from_logits(logits)
    kept = predictor.on_menu(predictor.menu_scores(features, logits), len(features)).mean()
    nf_features, nf_logits = predictor.features_and_logits(nonfood)
    rejected = 1 - predictor.on_menu(predictor.menu_scores(nf_features, nf_logits), len(nf_features)).mean()
    top = probabilities.argmax(1)
    return {"features": features, "top": top, "accuracy": (top == extra_y).mean(),
            "ece": expected_calibration_error(probabilities, extra_y), "kept": kept, "rejected": rejected}


def timed(predictors: dict, batch, rounds: int) -> dict:
    """{runtime: (ms per image in passes of 16, ms for one image)}, medians over rounds run in turn."""
    times = {name: ([], []) for name in predictors}
    for predictor in predictors.values():
        predictor.features_and_logits(batch[:16])  # warm-up
    for _ in range(rounds):
        for name, predictor in predictors.items():
            started = time.perf_counter()
            predictor.features_and_logits(batch[:16])
            times[name][0].append(1000 * (time.perf_counter() - started) / 16)
            started = time.perf_counter()
            for i in range(8):
                predictor.features_and_logits(batch[16 + i:17 + i])
            times[name][1].append(1000 * (time.perf_counter() - started) / 8)
    return {name: (float(np.median(a)), float(np.median(b))) for name, (a, b) in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model bundle (default: the CPU default trained on food-dev first)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    machine_line, started = machine(), time.time()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["PLATEKIT_CACHE"] = scratch  # an empty cache: the first int8 load makes its copy
        import classify

        model = Path(args.model) if args.model else Path(scratch) / "run"
        if not args.model:
            subprocess.run([sys.executable, "-m", "classify", "train", "--data", str(FOOD_DEV), "--out", str(model)],
                           check=True, cwd=Path(__file__).parents[1])
        load_started = time.perf_counter()
        predictors = {"onnx": classify.load(model, runtime="onnx")}
        float_load = time.perf_counter() - load_started
        load_started = time.perf_counter()
        predictors["onnx-int8"] = classify.load(model, runtime="onnx-int8")
        int8_load = time.perf_counter() - load_started
        sizes = sorted(path.stat().st_size / 1e6 for path in (Path(scratch) / "onnx").glob("*.onnx"))
        p = predictors["onnx"]
        extra, extra_y = decoded(p, SHARED / "food-dev-extra", p.classes)
        nonfood, _ = decoded(p, SHARED / "nonfood-dev", None)
        speed = timed(predictors, extra, args.rounds)
        results = {name: scored(predictor, extra, extra_y, nonfood) for name, predictor in predictors.items()}
        words = f"{'+'.join(p.bundle.architecture.split('+'))} at {p.image_size} px"
    a, b = results["onnx"]["features"], results["onnx-int8"]["features"]
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    agree = (results["onnx"]["top"] == results["onnx-int8"]["top"]).mean()
    rows = [[name, f"{speed[name][0]:.1f}", f"{1000 / speed[name][0]:.1f}", f"{speed[name][1]:.1f}",
             f"{100 * r['accuracy']:.2f} %", f"{100 * r['kept']:.1f} %", f"{100 * r['rejected']:.1f} %",
             f"{r['ece']:.4f}"] for name, r in results.items()]
    body = table(["runtime", "ms/image, passes of 16", "images/s", "ms, one image", "food-dev-extra accuracy",
                  "extra kept on menu", "non-food rejected", "extra ECE"], rows)
    body += (f"\n\n{words}; {len(extra_y)} food-dev-extra and {len(nonfood)} nonfood-dev photos. Speed: decoded "
             f"photos through `Predictor.features_and_logits`, medians of {args.rounds} rounds, the runtimes in "
             f"turn. int8 against float: {speed['onnx'][0] / speed['onnx-int8'][0]:.2f}x the images a second in "
             f"passes of 16, {speed['onnx'][1] / speed['onnx-int8'][1]:.2f}x for one image; the top class agrees on "
             f"{100 * agree:.1f} % of food-dev-extra; pooled features' cosine to float's median "
             f"{np.median(cosine):.4f} (lowest {cosine.min():.4f}). Files {sizes[0]:.1f} MB (int8) and "
             f"{sizes[-1]:.1f} MB (float). First load with an empty cache: float {float_load:.1f} s (the export), "
             f"int8 {int8_load:.1f} s (its export, calibration on the bundle's {len(p.calibration_inputs())} "
             f"examples and quantization). Wall {time.time() - started:.0f} s.")
    print(body)
    if not args.no_record:
        append("int8.py: --runtime onnx-int8 against the float ONNX model (CPU)", body, machine_line)


if __name__ == "__main__":
    main()
