"""Gradio demo of a trained model bundle: photo in, top-5 foods out, with a model card, latency and optional facts."""
from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import gradio as gr
from gradio import FileData
from PIL import Image

import classify
from classify import RUNTIMES, ClassifyError, feedback, images, menu
from classify import bundle as bundle_format
from classify.batching import MAX_BATCH, Batcher, SingleFlight
from classify.explain import Explainer
from classify.names import class_key
from classify.options import PORT, Parser, number, read_text
from classify.serving import guard, why_unservable

TOP_K = 5
# A photo's page answer is kept this long for the page's duplicate request (classify.batching.SingleFlight): the same
# upload and toggle within it get the same answer without another pass (at most 64 answers kept, a few MB).
REPEAT_SECONDS = 5.0
MAX_UPLOAD_MB = 20  # a phone photo is 2-8 MB; anything far bigger is not a food photo worth decoding
REQUEST_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and JSON around an upload
# Each request holds one CPU core for tens of ms; more parallel requests than cores only adds queueing inside torch.
CONCURRENCY = max(1, min(4, os.cpu_count() or 1))
# Gradio rebuilds a pandas summary of its last 10,000 events after every event (queueing.py
# compute_analytics_summary), for its /monitoring page: 2 ms of CPU at 300 events, 8-12 ms at 10,000 (measured here),
# so a demo that has served a while pays more per request. Every 100th event keeps that page current enough.
ANALYTICS_EVERY = "100"
EXAMPLES_PER_CLASS = 2
STRATEGIES = {"all": "frozen (head trained)", "partial": "last stages fine-tuned", "none": "fully fine-tuned"}
TRAIN_HINT = "python -m classify train --data DATA --out runs/food"
# Below this width Gradio stacks the two columns; the photo's column then opens up (display: contents) so its
# examples can move after the result: on a phone the result comes right under the photo, not 16 thumbnails down.
# The heat map shows only while its toggle is on, whatever answer comes last: a photo's answer computed with the map
# can arrive after the toggle was switched off (Gradio runs the page's duplicate change events side by side).
CSS = """
#result-column:has(#heat-toggle input:not(:checked)) #heat-map { display: none !important; }
@media (max-width: 700px) {
  #input-column { display: contents; }
  #input-column > *, #result-column { flex: 1 1 100%; }
  #examples { order: 1; }
}
"""


# --- the bundle and the facts file ------------------------------------------------------------------------------

find_latest_run = bundle_format.find_latest  # the newest complete bundle under a folder, or None


def read_facts(path: str | Path) -> dict[str, dict[str, str]]:
    """FILE.csv with a header, the class in the first column, any facts after it → {class: {column: value}}."""
    path = Path(path)
    try:
        # strict: an unclosed quote is an error, not a cell that swallows the rest of the file
        rows = list(csv.reader(io.StringIO(read_text(path, "facts file"), newline=""), strict=True))
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
    folder = run_dir / bundle_format.EXAMPLES_DIR
    if not folder.is_dir():
        return []
    return [str(image) for class_folder in sorted(p for p in folder.iterdir() if p.is_dir())
            for image in sorted(class_folder.glob("*.jpg"))[:per_class]]


def display_name(name: str) -> str:
    return name.replace("_", " ")


def wilson_interval(hits: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion: sound at n of a few dozen, where p +- 2 SE is not."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    centre, spread = p + z * z / (2 * n), z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5
    return max(0.0, (centre - spread) / (1 + z * z / n)), min(1.0, (centre + spread) / (1 + z * z / n))


def score_rows(figures: dict, honest: bool) -> list[tuple[str, str]]:
    """Accuracy (with its interval when the split is held out), top-5 and average position of one evaluation."""
    def percent(name):
        value = figures.get(name)
        return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "n/a"

    n, accuracy = figures.get("n"), figures.get("accuracy")
    if honest and isinstance(n, int) and isinstance(accuracy, (int, float)):
        low, high = wilson_interval(accuracy * n, n)
        where = Path(str(figures.get("split", "held-out split"))).name
        measured = f"{percent('accuracy')} on {where} (held out), 95% interval {100 * low:.1f}-{100 * high:.1f}%, n={n}"
    else:
        measured = f"{percent('accuracy')} on the valid split (used to pick the epoch), n={n if n else '?'}"
    position = figures.get("average_position")
    return [("Accuracy", measured), ("Top-5 accuracy", percent("top5")),
            ("Average position of the true class", f"{position:.2f}" if isinstance(position, (int, float)) else "n/a")]


def backbone_words(architecture: str) -> str:
    """`a` for one backbone; `a` + `b` side by side for several (separate code spans: a phone can wrap them)."""
    names = architecture.split("+")
    if len(names) == 1:
        return f"`{architecture}`"
    return " + ".join(f"`{name}`" for name in names) + " side by side"


def model_card(predictor) -> str:
    """The card: held-out figures from `evaluate --out` on a split the model never saw when there are some, else
    the valid split's, labelled as the split that picked the epoch."""
    bundle = predictor.bundle
    honest = bool(predictor.held_out)
    rows = [
        ("Backbone", backbone_words(bundle.architecture) + f", {bundle.image_size} px, "
                     + STRATEGIES.get(bundle.strategy, str(bundle.strategy))),
        ("Classes", f"{len(predictor.classes)}: " + ", ".join(map(display_name, predictor.classes))),
        *score_rows(predictor.held_out if honest else predictor.metrics, honest),
        ("Calibrated", f"temperature {bundle.temperature:g} fitted on the valid split" if bundle.calibrated
         else "no (made before calibration)"),
        *menu_rows(bundle, (predictor.metrics or {}).get("n")),
        ("Trained", str(bundle.created or "?")[:19].replace("T", " ")),
        *([("Runs", "an 8-bit copy of the model (`--runtime onnx-int8`), about twice as fast; the figures above are "
                    "the full model's")] if predictor.int8 else []),
    ]
    return "### Model card\n" + "\n".join(f"- **{key}**: {value}" for key, value in rows)


def menu_rows(bundle, valid_n: int | None = None) -> list[tuple[str, str]]:
    """The card's line on the on-menu rule: what share of photos like the `valid_n` valid ones it keeps
    (classify.menu.promised_keep), and the photos of other things it was trained to reject (`train --not-on-menu`)."""
    if bundle.menu_method is None:
        return [("Other photos", "every photo is taken for one of the dishes (made before the on-menu score)")]
    kept = bundle.settings.get("keep", menu.KEEP)
    kept = menu.promised_keep(valid_n, kept) if valid_n else kept
    photos = (bundle.menu_mix or {}).get("exposure_photos")
    return [("Other photos", f"a photo unlike these dishes is said to be none of them (the rule keeps {kept:.0%} of "
                             "photos like its valid ones)" + (f"; trained to reject what looks like {photos} photos of other "
                                                    "things" if photos else ""))]


def facts_markdown(facts: dict[str, dict[str, str]] | None, name: str) -> str:
    if facts is None:
        return ""
    row = {class_key(key): value for key, value in facts.items()}.get(class_key(name))
    if not row:
        return f"No facts listed for **{display_name(name)}**."
    lines = "\n".join(f"- **{key}**: {value}" for key, value in row.items())
    return f"### {display_name(name).capitalize()}\n{lines}"


# --- one prediction ---------------------------------------------------------------------------------------------

def user_error(message: str, title: str = "Cannot classify this") -> gr.Error:
    """Shown in the UI (and returned to API clients) as is; a bad upload is no reason for a server traceback."""
    return gr.Error(message, title=title, print_exception=False)


def upload_source(payload) -> tuple[Path | io.BytesIO, str]:
    """Where the uploaded file's bytes are, as sent (a Gradio FileData dict's path, or a data: URL from the
    webcam/clipboard decoded), and its name. Gradio has already refused paths that were not uploaded
    (InvalidPathError) and files over max_file_size."""
    if isinstance(payload, dict) and payload.get("path"):
        path = Path(payload["path"])
        return path, payload.get("orig_name") or path.name
    if isinstance(payload, dict) and str(payload.get("url") or "").startswith("data:"):
        try:
            return io.BytesIO(base64.b64decode(payload["url"].split(",", 1)[1])), "image"
        except (IndexError, ValueError):
            raise user_error("The image data could not be read; try uploading the file instead.") from None
    raise user_error("No image received: upload a photo, take one with the webcam or paste one.")


def open_upload(payload) -> Image.Image:
    """The uploaded file as a lazily decoded PIL image. Raises gr.Error with a message for the user for anything
    that is not a readable image."""
    source, name = upload_source(payload)
    try:
        return images.open_lazy(source)
    except images.ImageError as error:
        if error.reason in ("empty", "not_an_image", "unsupported_format"):
            raise user_error(f"'{name}' is not an image this demo can read: upload a JPEG, PNG, WebP, HEIC or "
                             "AVIF photo.") from None
        raise user_error(f"'{name}': {error}.") from None


def top_k(batcher: Batcher, image: Image.Image, k: int = TOP_K):
    """The image's classify.predict.Prediction: calibrated top-k and whether it is on the menu, from a forward pass
    shared with whatever other requests are waiting."""
    # The predictor shrinks the shorter side to its input size before anything else (JPEGs are even decoded at
    # reduced scale), so a 48 MP photo costs little more than a thumbnail.
    try:
        return batcher.prediction(image, k=k)
    except ClassifyError as error:
        raise user_error(f"This image could not be read: {error}") from None


def explain(explainer, image: Image.Image):
    try:
        return explainer.explain(image, k=TOP_K)
    except ClassifyError as error:
        raise user_error(f"This image could not be read: {error}") from None


CLOSE = 0.15  # top two probabilities closer than this: the demo asks "A or B?" instead of naming one


def verdict_markdown(prediction, n_dishes: int) -> str:
    """Off the menu: say so, with the closest guesses; two close guesses: ask; otherwise nothing (the label says)."""
    (first, p1), (second, p2) = prediction.top[0], prediction.top[1] if len(prediction.top) > 1 else (None, 0.0)
    if not prediction.on_menu:
        guesses = ", ".join(f"{display_name(name)} {100 * p:.0f}%" for name, p in prediction.top[:3])
        return f"### This doesn't look like any of my {n_dishes} dishes\nClosest guesses: {guesses}"
    if second is not None and p1 - p2 < CLOSE:
        return f"### {display_name(first)} or {display_name(second)}?"
    return ""


# --- feedback: "Right" and "Wrong? It is …" ---------------------------------------------------------------------

SOMETHING_ELSE = "__something_else__"  # the dropdown's last choice, which opens a box to type the dish in
FEEDBACK_NOTICE = ("**Feedback is on:** a photo you mark *Right* or *Wrong* is kept on this server, with your answer, "
                   "to improve the model.")


def keep_feedback(batcher: Batcher, folder: Path, payload, label: str | None,
                  own_photos: frozenset[str]) -> feedback.Verdict | None:
    """Keep the uploaded photo, byte for byte as sent, with what the model says of it and `label` (None: "Right",
    the model's top class); never one of the bundle's own examples (`own_photos`, their sha256s). None when "Right"
    is said of a photo the model named no dish for: nothing is kept."""
    prediction = top_k(batcher, open_upload(payload))  # decodes it whole: a damaged photo is refused here
    if label is None:
        if not prediction.on_menu:
            return None
        label = prediction.top[0][0]
    source, _ = upload_source(payload)
    data = source.read_bytes() if isinstance(source, Path) else source.getvalue()
    try:
        return feedback.record(folder, data, label, prediction, batcher.predictor.classes, refused=own_photos)
    except ClassifyError as error:
        raise user_error(f"{str(error)[:1].upper()}{str(error)[1:]}.", title="Cannot keep this") from None


def feedback_message(verdict: feedback.Verdict | None) -> str:
    if verdict is None:
        return ("The model named none of its dishes here, so nothing was kept: if it is one, pick it under "
                "**Wrong? It is …**")
    if verdict.verdict == "right":
        return f"Kept as **{display_name(verdict.label)}**. Thank you!"
    return (f"Kept as **{display_name(verdict.label)}** (the model said {display_name(verdict.predicted)}, "
            f"{100 * verdict.probability:.0f}%). Thank you!")


def feedback_panel(batcher: Batcher, folder: Path, image: gr.Image) -> None:
    """The "Right" button and the "Wrong? It is …" dropdown under the prediction, shown once there is a photo, and
    the same as the /feedback API."""
    predictor = batcher.predictor
    own = feedback.own_photos(predictor.run_dir)  # hashed once, not on every verdict
    with gr.Column(visible=False, variant="panel", elem_id="feedback") as panel:
        with gr.Row():
            right = gr.Button("Right", variant="primary", size="md", elem_id="feedback-right", scale=0, min_width=100)
            choice = gr.Dropdown([(display_name(name), name) for name in predictor.classes]
                                 + [("something else: …", SOMETHING_ELSE)], value=None, label="Wrong? It is …",
                                 elem_id="feedback-wrong", scale=3, min_width=150)
            send = gr.Button("Send correction", size="md", elem_id="feedback-send", scale=0, min_width=150)
        with gr.Row(visible=False) as other_row:
            other = gr.Textbox(label="Something else:", placeholder="the dish's name",
                               max_length=feedback.MAX_LABEL_CHARS, elem_id="feedback-other")
        status = gr.Markdown(elem_id="feedback-status")

    def on_new_photo(payload):
        return {panel: gr.update(visible=payload is not None), status: "", choice: None, other: "",
                other_row: gr.update(visible=False)}

    def say_wrong(payload, picked, typed):
        label = typed if picked == SOMETHING_ELSE else picked
        return feedback_message(keep_feedback(batcher, folder, payload, label or "", own))

    image.change(on_new_photo, image, [panel, status, choice, other, other_row], preprocess=False,
                 api_visibility="private", queue=False)
    choice.change(lambda picked: gr.update(visible=picked == SOMETHING_ELSE), choice, other_row,
                  api_visibility="private", queue=False)
    right.click(lambda payload: feedback_message(keep_feedback(batcher, folder, payload, None, own)), image, status,
                preprocess=False, api_visibility="private")
    send.click(say_wrong, [image, choice, other], status, preprocess=False, api_visibility="private")
    other.submit(say_wrong, [image, choice, other], status, preprocess=False, api_visibility="private")

    def send_feedback(image: FileData, label: str) -> dict:
        """Keep the photo, as sent, in the feedback folder with `label` (what it is) and what the model said of it:
        the row written to feedback.csv, {"time", "file", "sha256", "predicted", "probability", "menu_score",
        "label", "verdict"}."""
        return asdict(keep_feedback(batcher, folder, image, label, own))

    gr.api(send_feedback, api_name="feedback")


# --- the app ----------------------------------------------------------------------------------------------------

def check_facts(facts: dict[str, dict[str, str]] | None, classes: list[str]) -> None:
    """ClassifyError when a facts file names none of the model's classes (a facts file for another menu)."""
    if facts is not None and not {class_key(name) for name in facts} & {class_key(name) for name in classes}:
        raise ClassifyError(f"the facts file names none of the model's classes ({', '.join(classes[:5])}"
                            f"{', ...' if len(classes) > 5 else ''})")


def make_explainer(predictor) -> Explainer | None:
    """The heat-map maker, or None where the backbone has no feature map to draw from (a vision transformer): the
    demo then runs without heat maps."""
    try:
        return Explainer(predictor)
    except ClassifyError:
        return None


def page_answer(predictor, batcher: Batcher, explainer, facts, image: Image.Image, show_heat_map: bool) -> dict:
    """What the page shows for a photo, as plain values (each caller wraps them in its own gr.update: Gradio pops
    "value" out of an update dict as it sends it, so one dict cannot serve two answers)."""
    width, height = image.size  # before predicting: JPEG draft mode shrinks the image in place
    start = time.perf_counter()
    # With the heat map, its pass gives the prediction too: one forward pass a photo, not two.
    explanation = explain(explainer, image) if show_heat_map and explainer else None
    prediction = explanation.prediction if explanation else top_k(batcher, image)
    latency_ms = 1000 * (time.perf_counter() - start)
    return {"top": {display_name(name): p for name, p in prediction.top}, "on_menu": prediction.on_menu,
            "verdict": verdict_markdown(prediction, len(predictor.classes)),
            "facts": facts_markdown(facts, prediction.top[0][0]) if prediction.on_menu else "",
            "latency": f"Predicted in **{latency_ms:.0f} ms** on {predictor.device.type.upper()} "
                       f"({width}x{height} px photo, scaled to {predictor.image_size} px"
                       f"{', heat map included' if explanation else ''})",
            "overlay": explanation.overlay() if explanation else None}


def build_app(run_dir: str | Path, facts: dict[str, dict[str, str]] | None = None,
              feedback_dir: str | Path | None = None, max_batch: int = MAX_BATCH, runtime: str = "auto") -> gr.Blocks:
    """The demo for one bundle; the model is loaded here, once. Raises ClassifyError for a bad bundle. With
    `feedback_dir`, users can say whether a prediction was right, and their photos are kept there. Up to
    `max_batch` predictions share a forward pass (and as many run at once); `runtime` as `classify.load`'s."""
    run_dir = Path(run_dir)
    folder = feedback.open_folder(feedback_dir) if feedback_dir is not None else None
    predictor = classify.load(run_dir, runtime=runtime)
    batcher = Batcher(predictor, max_batch)
    check_facts(facts, predictor.classes)
    explainer = make_explainer(predictor)

    in_flight = SingleFlight(keep_seconds=REPEAT_SECONDS)

    def classify_image(payload, show_heat_map=True):
        """UI: the label (hidden off the menu), the verdict, facts of the top class, latency line, heat map (hidden
        when toggled off). The same photo asked for again while its answer is made, or just after, gets that answer."""
        if payload is None:
            return {label: gr.update(value=None, visible=True), verdict: "", facts_box: "", latency: "",
                    heat_map: gr.update(value=None, visible=False)}
        source = payload.get("path") or payload.get("url") if isinstance(payload, dict) else None
        if isinstance(source, str) and source.startswith("data:"):  # a webcam photo: key on its digest, so kept
            source = hashlib.sha256(source.encode()).hexdigest()   # answers never hold megabytes of base64

        def answer():
            return page_answer(predictor, batcher, explainer, facts, open_upload(payload), bool(show_heat_map))
        view = in_flight.run((source, bool(show_heat_map)), answer) if isinstance(source, str) else answer()
        return {label: gr.update(value=view["top"], visible=view["on_menu"]), verdict: view["verdict"],
                facts_box: view["facts"], latency: view["latency"],
                heat_map: gr.update(value=view["overlay"], visible=view["overlay"] is not None)}

    def predict(image: FileData) -> list[dict]:
        """The top-5 classes of an image, most likely first: [{"label": class, "probability": p, "on_menu": bool,
        "menu_score": s}, ...]; every row carries the image's on_menu and menu_score (the list stays a list)."""
        result = top_k(batcher, open_upload(image)).to_json()
        return [row | {"on_menu": result["on_menu"], "menu_score": result["menu_score"]}
                for row in result["predictions"]]

    def classify_photo(image: FileData) -> dict:
        """{"predictions": [{"label", "probability"}, ...], "on_menu": bool, "menu_score": s}, as predict --json."""
        return top_k(batcher, open_upload(image)).to_json()

    title = f"platekit: what's on the plate? ({len(predictor.classes)} dishes)"
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\nUpload a food photo, take one with the webcam or paste one from the clipboard.")
        if folder is not None:
            gr.Markdown(FEEDBACK_NOTICE, elem_id="feedback-notice")
        with gr.Row():
            with gr.Column(elem_id="input-column"):
                image = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", label="Photo",
                                 height=360, elem_id="photo")
                examples = example_images(run_dir)
                if examples:
                    gr.Examples(examples, inputs=image, label="Examples from the training bundle",
                                examples_per_page=2 * EXAMPLES_PER_CLASS * 4, elem_id="examples")
            with gr.Column(elem_id="result-column"):
                verdict = gr.Markdown(elem_id="verdict")
                label = gr.Label(num_top_classes=TOP_K, label="Top 5", elem_id="prediction")
                if folder is not None:
                    feedback_panel(batcher, folder, image)
                show_heat_map = gr.Checkbox(True, label="Show where the model looked (heat map)", elem_id="heat-toggle",
                                            visible=explainer is not None)
                heat_map = gr.Image(type="pil", label="Where it looked: the top class, on the crop the model saw",
                                    visible=False, interactive=False, elem_id="heat-map", height=300)
                latency = gr.Markdown(elem_id="latency")
                facts_box = gr.Markdown(elem_id="facts")
                gr.Markdown(model_card(predictor), elem_id="model-card")
        # preprocess=False: the handler decodes the upload itself, so a corrupt file becomes a message, not a crash.
        # Predictions run more at once than CONCURRENCY: their handlers decode the upload, then wait for a shared
        # forward pass (batching.py), so as many as one pass takes; the page and both API endpoints share the limit.
        slots = {"concurrency_id": "prediction", "concurrency_limit": max_batch}
        # One listener for both triggers: Gradio then defers an input that comes while a pass is running (the last
        # one wins). It cannot defer a replaced photo's duplicate change event, hence SingleFlight and the CSS rule.
        gr.on([image.change, show_heat_map.change], classify_image, [image, show_heat_map],
              [label, verdict, facts_box, latency, heat_map], trigger_mode="always_last", preprocess=False,
              api_visibility="private", **slots)
        gr.api(predict, api_name="predict", **slots)
        gr.api(classify_photo, api_name="classify", **slots)
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
    parser.add_argument("--port", type=PORT, default=7860, help="port to listen on, 1..65535 (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public *.gradio.live link")
    parser.add_argument("--auth", metavar="USER:PASS", help="ask for this user name and password")
    parser.add_argument("--facts", metavar="FILE.csv", help="CSV: class, then any columns (calories, protein, ...)")
    parser.add_argument("--feedback", metavar="DIR", help="let users say whether a prediction was right; keep their "
                        "photos and answers in DIR (for `python -m curate import DIR`)")
    parser.add_argument("--max-upload-mb", type=number(float, 0, None, low_open=True), default=MAX_UPLOAD_MB,
                        help=f"refuse bigger uploads and requests, in MB (default {MAX_UPLOAD_MB})")
    parser.add_argument("--max-batch", type=number(int, 1, 256), default=MAX_BATCH,
                        help=f"predictions scored in one forward pass at most, and run at once (default {MAX_BATCH}, "
                        "chosen on 2 CPU cores; more cores may serve more with more)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="how the CPU scores: auto/onnx (ONNX Runtime), onnx-int8 (an 8-bit copy calibrated on the "
                        "bundle's examples: about 2x the photos a second, top class as float's on 97 %% of photos; "
                        "heat maps stay float), torch (default auto)")
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
        facts = read_facts(args.facts) if args.facts else None
        bundle_format.read(run_dir)  # a bad bundle, facts file or feedback folder is the problem to report first
        if args.feedback is not None:
            feedback.open_folder(args.feedback)
        problem = why_unservable(args.host, args.port)
        if problem:
            raise ClassifyError(f"cannot serve on {args.host}:{args.port}: {problem}")
        demo = build_app(run_dir, facts, args.feedback, args.max_batch, args.runtime)
    except ClassifyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    max_bytes = int(args.max_upload_mb * 1024 * 1024)
    # every request body is capped too: Gradio's cap is per file, and a webcam photo arrives as a base64 data: URL
    middleware = guard(max_body_bytes=max_bytes * 4 // 3 + REQUEST_OVERHEAD_BYTES)
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", ANALYTICS_EVERY)  # read when the queue is made
    try:
        demo.queue(default_concurrency_limit=CONCURRENCY, max_size=256).launch(
            server_name=args.host, server_port=args.port, share=args.share, auth=auth, max_file_size=max_bytes,
            allowed_paths=[str(run_dir / bundle_format.EXAMPLES_DIR)], app_kwargs={"middleware": middleware}, css=CSS)
    except OSError as error:  # taken since the check above
        print(f"error: cannot serve on {args.host}:{args.port}: {why_unservable(args.host, args.port) or error}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
