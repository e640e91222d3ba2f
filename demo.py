"""Gradio demo of a trained model bundle: photo in, top-5 foods out, with a model card, latency and optional facts."""
from __future__ import annotations

import argparse
import base64
import csv
import io
import os
import sys
import time
from pathlib import Path

import gradio as gr
from gradio import FileData
from PIL import Image

import classify
from classify import ClassifyError
from classify.options import PORT, Parser, number, read_text
from classify.serving import guard, why_unservable

TOP_K = 5
MAX_UPLOAD_MB = 20  # a phone photo is 2-8 MB; anything far bigger is not a food photo worth decoding
REQUEST_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and JSON around an upload
MAX_PIXELS = 50_000_000  # 50 MP: decoding more costs hundreds of MB per request for no gain at 224 px
# Each request holds one CPU core for tens of ms; more parallel requests than cores only adds queueing inside torch.
CONCURRENCY = max(1, min(4, os.cpu_count() or 1))
EXAMPLES_PER_CLASS = 2
STRATEGIES = {"all": "frozen (head trained)", "partial": "last stages fine-tuned", "none": "fully fine-tuned"}
TRAIN_HINT = "python -m classify train --data DATA --out runs/food"


# --- the bundle and the facts file ------------------------------------------------------------------------------

def find_latest_run(runs_dir: str | Path = "runs") -> Path | None:
    """The newest folder under `runs_dir` holding a complete bundle (config.json + model.safetensors), or None."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return None
    bundles = [weights.parent for weights in runs_dir.rglob("model.safetensors")
               if (weights.parent / "config.json").is_file()]
    return max(bundles, key=lambda run: (run / "model.safetensors").stat().st_mtime, default=None)


def read_facts(path: str | Path) -> dict[str, dict[str, str]]:
    """FILE.csv with a header, the class in the first column, any facts after it → {class: {column: value}}."""
    path = Path(path)
    try:
        rows = list(csv.reader(io.StringIO(read_text(path, "facts file"), newline="")))
    except csv.Error as error:
        raise ClassifyError(f"cannot read facts file {path}: {error}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ClassifyError(f"facts file {path} needs a header row (class, then fact columns) and one row per class")
    header = [cell.strip() for cell in rows[0]]
    facts = {}
    for line, row in enumerate(rows[1:], start=2):
        name = row[0].strip()
        if not name:
            raise ClassifyError(f"facts file {path}, line {line}: the first column (the class) is empty")
        if name in facts:
            raise ClassifyError(f"facts file {path}, line {line}: class '{name}' appears twice")
        if len(row) > len(header):
            raise ClassifyError(f"facts file {path}, line {line} has {len(row)} columns, the header "
                                f"{len(header)}: quote values that hold a comma")
        facts[name] = {column: value.strip() for column, value in zip(header[1:], row[1:]) if column}
    return facts


def example_images(run_dir: Path, per_class: int = EXAMPLES_PER_CLASS) -> list[str]:
    """A few of the bundle's own examples/<class>/*.jpg, so the demo needs nothing but the bundle."""
    folder = run_dir / "examples"
    if not folder.is_dir():
        return []
    return [str(image) for class_folder in sorted(p for p in folder.iterdir() if p.is_dir())
            for image in sorted(class_folder.glob("*.jpg"))[:per_class]]


def display_name(name: str) -> str:
    return name.replace("_", " ")


def model_card(predictor) -> str:
    config, metrics = predictor.config, predictor.metrics

    def percent(name):
        value = metrics.get(name)
        return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "n/a"

    position = metrics.get("average_position")
    rows = [
        ("Backbone", f"`{config.get('architecture', '?')}`, {config.get('image_size', '?')} px, "
                     + STRATEGIES.get(config.get("strategy"), str(config.get("strategy")))),
        ("Classes", f"{len(predictor.classes)}: " + ", ".join(map(display_name, predictor.classes))),
        ("Accuracy", percent("accuracy")),
        ("Top-5 accuracy", percent("top5")),
        ("Average position of the true class", f"{position:.2f}" if isinstance(position, (int, float)) else "n/a"),
        ("Evaluated on", f"{metrics['n']} {metrics.get('split', '')} images" if "n" in metrics else "n/a"),
        ("Trained", str(config.get("created", "?"))[:19].replace("T", " ")),
    ]
    return "### Model card\n" + "\n".join(f"- **{key}**: {value}" for key, value in rows)


def class_key(name: str) -> str:
    """'Beef Tartare', 'beef_tartare' and 'beef-tartare' name the same class."""
    return "_".join(name.lower().replace("-", " ").replace("_", " ").split())


def facts_markdown(facts: dict[str, dict[str, str]] | None, name: str) -> str:
    if facts is None:
        return ""
    row = {class_key(key): value for key, value in facts.items()}.get(class_key(name))
    if not row:
        return f"No facts listed for **{display_name(name)}**."
    lines = "\n".join(f"- **{key}**: {value}" for key, value in row.items())
    return f"### {display_name(name).capitalize()}\n{lines}"


# --- one prediction ---------------------------------------------------------------------------------------------

def user_error(message: str) -> gr.Error:
    """Shown in the UI (and returned to API clients) as is; a bad upload is no reason for a server traceback."""
    return gr.Error(message, title="Cannot classify this", print_exception=False)


def open_upload(payload) -> Image.Image:
    """The uploaded file (a Gradio FileData dict, or a data: URL from the webcam/clipboard) as a lazily decoded
    PIL image. Raises gr.Error with a message for the user for anything that is not a readable image.
    Gradio has already refused paths that were not uploaded (InvalidPathError) and files over max_file_size."""
    if isinstance(payload, dict) and payload.get("path"):
        path = Path(payload["path"])
        source, name = path, payload.get("orig_name") or path.name
    elif isinstance(payload, dict) and str(payload.get("url") or "").startswith("data:"):
        try:
            source, name = io.BytesIO(base64.b64decode(payload["url"].split(",", 1)[1])), "image"
        except (IndexError, ValueError):
            raise user_error("The image data could not be read; try uploading the file instead.") from None
    else:
        raise user_error("No image received: upload a photo, take one with the webcam or paste one.")
    try:
        image = Image.open(source)
    except (OSError, ValueError, Image.DecompressionBombError):
        raise user_error(f"'{name}' is not an image this demo can read: upload a JPEG, PNG or WebP photo.") from None
    if image.width * image.height > MAX_PIXELS:
        raise user_error(f"'{name}' is {image.width}x{image.height} px; the limit is {MAX_PIXELS // 1_000_000} MP.")
    return image


def top_k(predictor, image: Image.Image, k: int = TOP_K) -> list[tuple[str, float]]:
    # The predictor shrinks the shorter side to its input size before anything else (JPEGs are even decoded at
    # reduced scale), so a 48 MP photo costs little more than a thumbnail.
    try:
        return predictor.predict(image, k=k)
    except ClassifyError as error:
        raise user_error(f"This image could not be read: {error}") from None


# --- the app ----------------------------------------------------------------------------------------------------

def build_app(run_dir: str | Path, facts: dict[str, dict[str, str]] | None = None) -> gr.Blocks:
    """The demo for one bundle; the model is loaded here, once. Raises ClassifyError for a bad bundle."""
    run_dir = Path(run_dir)
    predictor = classify.load(run_dir)
    if facts is not None and not {class_key(name) for name in facts} & {class_key(name) for name in predictor.classes}:
        raise ClassifyError(f"the facts file names none of the model's classes ({', '.join(predictor.classes[:5])}"
                            f"{', ...' if len(predictor.classes) > 5 else ''})")

    def classify_image(payload):
        """UI: label, facts of the top class, latency line."""
        if payload is None:
            return None, "", ""
        image = open_upload(payload)
        width, height = image.size  # before predicting: JPEG draft mode shrinks the image in place
        start = time.perf_counter()
        predictions = top_k(predictor, image)
        latency_ms = 1000 * (time.perf_counter() - start)
        top_class = predictions[0][0]
        latency = (f"Predicted in **{latency_ms:.0f} ms** on {predictor.device.type.upper()} "
                   f"({width}x{height} px photo, scaled to {predictor.image_size} px)")
        return {display_name(name): p for name, p in predictions}, facts_markdown(facts, top_class), latency

    def predict(image: FileData) -> list[dict]:
        """The top-5 classes of an image, most likely first: [{"label": class, "probability": p}, ...]."""
        predictions = top_k(predictor, open_upload(image))
        return [{"label": name, "probability": round(probability, 6)} for name, probability in predictions]

    title = f"platekit: what's on the plate? ({len(predictor.classes)} dishes)"
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\nUpload a food photo, take one with the webcam or paste one from the clipboard.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", label="Photo",
                                 height=360)
                examples = example_images(run_dir)
                if examples:
                    gr.Examples(examples, inputs=image, label="Examples from the training bundle",
                                examples_per_page=2 * EXAMPLES_PER_CLASS * 4)
            with gr.Column():
                label = gr.Label(num_top_classes=TOP_K, label="Top 5", elem_id="prediction")
                latency = gr.Markdown(elem_id="latency")
                facts_box = gr.Markdown(elem_id="facts")
                gr.Markdown(model_card(predictor), elem_id="model-card")
        # preprocess=False: the handler decodes the upload itself, so a corrupt file becomes a message, not a crash.
        image.change(classify_image, image, [label, facts_box, latency], preprocess=False,
                     api_visibility="private")
        gr.api(predict, api_name="predict")
    return demo


# --- command line -----------------------------------------------------------------------------------------------

def parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, _, password = text.partition(":")
    if not user or not password:
        raise ClassifyError("--auth must be USER:PASS with both parts non-empty")
    return user, password


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python demo.py",
                                     description="Serve a trained food classifier in the browser.")
    parser.add_argument("--model", help="run folder (model bundle); default: the newest one under --runs-dir")
    parser.add_argument("--runs-dir", default="runs", help="where to look for runs when --model is not given")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: the whole network)")
    parser.add_argument("--port", type=PORT, default=7860, help="port to listen on, 0..65535 (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public *.gradio.live link")
    parser.add_argument("--auth", metavar="USER:PASS", help="ask for this user name and password")
    parser.add_argument("--facts", metavar="FILE.csv", help="CSV: class, then any columns (calories, protein, ...)")
    parser.add_argument("--max-upload-mb", type=number(float, 0, None, low_open=True), default=MAX_UPLOAD_MB,
                        help=f"refuse bigger uploads and requests, in MB (default {MAX_UPLOAD_MB})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_dir = Path(args.model) if args.model else find_latest_run(args.runs_dir)
        if run_dir is None:
            print(f"no trained model under {args.runs_dir}/: train one with `{TRAIN_HINT}` "
                  "or pass --model RUN_DIR", file=sys.stderr)
            return 2
        auth = parse_auth(args.auth)
        problem = why_unservable(args.host, args.port)
        if problem:
            raise ClassifyError(f"cannot serve on {args.host}:{args.port}: {problem}")
        facts = read_facts(args.facts) if args.facts else None
        demo = build_app(run_dir, facts)
    except ClassifyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    max_bytes = int(args.max_upload_mb * 1024 * 1024)
    # every request body is capped too: Gradio's cap is per file, and a webcam photo arrives as a base64 data: URL
    middleware = guard(max_body_bytes=max_bytes * 4 // 3 + REQUEST_OVERHEAD_BYTES)
    try:
        demo.queue(default_concurrency_limit=CONCURRENCY, max_size=256).launch(
            server_name=args.host, server_port=args.port, share=args.share, auth=auth, max_file_size=max_bytes,
            allowed_paths=[str(run_dir / "examples")], app_kwargs={"middleware": middleware})
    except OSError as error:  # taken since the check above
        print(f"error: cannot serve on {args.host}:{args.port}: {why_unservable(args.host, args.port) or error}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
