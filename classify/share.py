"""Sharing a bundle: a folder that is a complete Hugging Face Space, or a static web app that runs in the browser."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from classify import ClassifyError
from classify import bundle as bundle_format
from classify.export import INT8_AGREEMENT

MARKER = ".platekit-share"  # what a share export wrote, file by file: the only folder it may replace
# What the demo reads of a bundle, the files a Space serves (its examples/ folder is copied too); the others (plots,
# CSV reports, checkpoints) stay behind.
BUNDLE_FILES = (*bundle_format.REQUIRED, bundle_format.MENU_FILE, "metrics.json", bundle_format.HELD_OUT_FILE)
# What the demo imports when it runs (pip names); transformers only for a Hugging Face backbone. onnx and onnxruntime:
# a Space's CPU scores through ONNX Runtime, as a laptop's does (classify/runtime.py).
SPACE_REQUIREMENTS = ("gradio", "torch", "torchvision", "timm", "safetensors", "pillow", "pillow-heif", "numpy",
                      "grad-cam", "tqdm", "onnx", "onnxruntime")
HF_REQUIREMENTS = ("transformers", "accelerate")
ORT_VERSION = "1.30.0"  # onnxruntime-web, pinned: the integrity hashes below are of its files
ORT_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_VERSION}/dist/"
# sha384 of dist/ort.wasm.min.js in the npm package onnxruntime-web@ORT_VERSION (tests recompute it from npm pack).
ORT_SCRIPT = "ort.wasm.min.js"
ORT_INTEGRITY = "sha384-Bw6URI+Gvoadw0do7/QrSHUC9D1vCYYK5OSqChFyhyV5mzPL4oe2rOAFljAnS8Sq"
# The wasm backend without threads or WebGPU needs only these: the script, its loader and the WebAssembly binary.
ORT_FILES = (ORT_SCRIPT, "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
WEB_ASSETS = ("index.html", "app.js", "preprocess.js")
# Threads in onnxruntime-web need a cross-origin isolated page, which only the host's response headers make. Two
# files say so to the hosts that read them: `_headers` (Netlify, Cloudflare Pages) and README.md's front matter (a
# static Hugging Face Space's custom_headers). Plain hosts ignore both and the page runs on one thread.
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
WEB_README = """---
title: {quoted}
emoji: 🍜
colorFrom: yellow
colorTo: red
sdk: static
app_file: index.html
pinned: false
custom_headers:
{headers}
---

# {title}

A food classifier trained with platekit that runs in the browser: pick a photo or take one, and the page names the
dish on the device (onnxruntime-web); nothing is uploaded. Serve this folder from any static host that sends `.mjs`
as JavaScript. Where the host also sends the headers in `_headers` (as Netlify, Cloudflare Pages and a static
Hugging Face Space with this README do), the model runs on several threads.
"""


@dataclass(frozen=True)
class ShareReport:
    path: Path
    format: str
    files: int
    size_bytes: int
    url: str | None = None  # the Space's address after --push
    onnx_difference: float | None = None  # the ONNX export's max |softmax difference| vs PyTorch (web)


# -- the bundle's settings, before and after calibration landed ---------------------------------------------------

def read_settings(run_dir: Path) -> dict:
    """What the shared app needs from the bundle: classes, sizes, mean/std, the temperature (1 for a bundle made
    before calibration) and the on-menu rule (None when it has none)."""
    config = bundle_format.read(run_dir)
    return {"classes": list(config.classes), "image_size": config.image_size, "resize_to": config.cache_size,
            "mean": list(config.mean), "std": list(config.std), "temperature": config.temperature,
            "architecture": config.architecture,
            "menu": {"method": config.menu_method, "threshold": config.menu_threshold, "k": config.menu_k,
                     "mix": config.menu_mix}
            if config.menu_method else None}


# -- the output folder: refuse what is not ours, write beside it, swap into place ----------------------------------

def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _owned(out: Path) -> bool:
    """`out` holds exactly the files an earlier share export wrote there, unchanged, and nothing else."""
    try:
        listed = json.loads((out / MARKER).read_text(encoding="utf-8"))["files"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return False
    found = {}
    for path in out.rglob("*"):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            return False
        if path.is_file() and path.name != MARKER:
            found[path.relative_to(out).as_posix()] = path
    return isinstance(listed, dict) and set(listed) == set(found) and all(
        _sha256(found[name]) == listed[name] for name in found)


def check_out(run_dir, out) -> None:
    """Refuse an --out inside the bundle, a file, or a folder holding anything an earlier export did not write."""
    out, bundle = Path(out), Path(run_dir).resolve()
    where = out.resolve()
    if where == bundle or bundle in where.parents:
        raise ClassifyError(f"--out {out} lies inside the model bundle {run_dir}; write the export outside it")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ClassifyError(f"--out {out} exists and is not a folder; pick a new name")
    if out.is_dir() and any(out.iterdir()) and not _owned(out):
        raise ClassifyError(f"--out {out} is a folder that classify export did not write (or its files changed "
                            f"since); pick a new or empty folder")


def staging(out: Path) -> Path:
    """A fresh hidden folder beside `out`, where the export is written before it replaces `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # our own leftover from a killed run of this very process id
    tmp.mkdir()
    return tmp


def finish(tmp: Path, out: Path, fmt: str) -> tuple[int, int]:
    """List what `tmp` holds in its marker, then put it in place of `out` (empty, absent, or an earlier export,
    checked again here). Returns (files, bytes)."""
    files = {p.relative_to(tmp).as_posix(): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    (tmp / MARKER).write_text(json.dumps({"format": fmt, "files": files}, indent=1))
    size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.is_dir() and any(out.iterdir()):
        if not _owned(out):
            raise ClassifyError(f"--out {out} changed during the export; nothing replaced")
        out.rename(old)
    elif out.is_dir():
        out.rmdir()
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return len(files), size


def _written(run_dir, out, fmt: str, write) -> tuple[int, int]:
    """Run `write(folder)` on a staging folder and swap it into place; a failure or Ctrl-C leaves `out` as it was."""
    out = Path(out)
    check_out(run_dir, out)
    tmp = staging(out)
    try:
        write(tmp)
        return finish(tmp, out, fmt)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- a Hugging Face Space ------------------------------------------------------------------------------------------

def _version(name: str) -> str:
    try:
        return metadata.version(name).split("+")[0]  # 2.5.1+cpu is not on PyPI under that name
    except metadata.PackageNotFoundError:
        raise ClassifyError(f"{name} is not installed here, so its version cannot be pinned: pip install {name}") \
            from None


def space_title(settings: dict, run_dir: Path) -> str:
    # Spaces show the title on the card; it is short there (the hub trims long ones), so the run name and the count.
    return f"{run_dir.resolve().name}: {len(settings['classes'])} dishes"[:60]


SPACE_README = """---
title: {title}
emoji: 🍜
colorFrom: yellow
colorTo: red
sdk: gradio
sdk_version: {gradio}
app_file: app.py
pinned: false
---

# {heading}

A food classifier trained with platekit ({architecture}, {n} classes: {classes}). Upload a photo or take one
with the camera; the page shows the top 5 dishes. The model bundle is in `model/`, the code that serves it in
`classify/` and `demo.py` (a copy of platekit's, so this folder needs nothing but `requirements.txt`).

Run it locally: `pip install -r requirements.txt && python app.py` (port from `GRADIO_SERVER_PORT`, default 7860).
"""

SPACE_APP = '''"""Hugging Face Space: platekit's demo (demo.py) serving the model bundle in model/."""
import os
import sys
from pathlib import Path

import demo

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    # Spaces set GRADIO_SERVER_NAME=0.0.0.0 and GRADIO_SERVER_PORT; locally 127.0.0.1:7860 as the demo does.
    sys.exit(demo.main(["--model", str(HERE / "model"),
                        "--host", os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        "--port", os.environ.get("GRADIO_SERVER_PORT", "7860")]))
'''


def write_space(run_dir: Path, folder: Path) -> None:
    """README.md (Space header), app.py, requirements.txt, the code the demo imports and the bundle in model/."""
    import classify

    run_dir = Path(run_dir)
    settings = read_settings(run_dir)
    names = SPACE_REQUIREMENTS + (HF_REQUIREMENTS if settings["architecture"].startswith("hf:") else ())
    (folder / "requirements.txt").write_text("".join(f"{name}=={_version(name)}\n" for name in names))
    title = space_title(settings, run_dir)
    classes = ", ".join(c.replace("_", " ") for c in settings["classes"][:12])
    (folder / "README.md").write_text(SPACE_README.format(
        title=json.dumps(title, ensure_ascii=False), heading=title, gradio=_version("gradio"),
        architecture=settings["architecture"], n=len(settings["classes"]), classes=classes + (", ..." if len(settings["classes"]) > 12 else "")),
        encoding="utf-8")
    (folder / "app.py").write_text(SPACE_APP)
    package = Path(classify.__file__).parent
    shutil.copytree(package, folder / "classify", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "web"))
    shutil.copy2(Path(package.parent, "demo.py"), folder / "demo.py")
    model = folder / "model"
    model.mkdir()
    for name in BUNDLE_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, model / name)
    if (run_dir / bundle_format.EXAMPLES_DIR).is_dir():
        shutil.copytree(run_dir / bundle_format.EXAMPLES_DIR, model / bundle_format.EXAMPLES_DIR)


def export_space(run_dir, out, push: str | None = None) -> ShareReport:
    """Write a Gradio Space to `out`; with `push` (USER/NAME) create that Space (first, so that being offline or
    refused writes nothing) and upload the folder."""
    check_out(run_dir, out)
    read_settings(Path(run_dir))  # a bad bundle is refused before a Space is created or a file written
    api = _space_repo(push) if push else None
    files, size = _written(run_dir, out, "space", lambda folder: write_space(Path(run_dir), folder))
    url = _upload(api, push, Path(out)) if push else None
    return ShareReport(Path(out), "space", files, size, url=url)


def _hub_errors() -> tuple[type[Exception], ...]:
    """What huggingface_hub raises for a refused token, a name taken, no network: its own errors and its HTTP
    client's (httpx2 from huggingface_hub 1.x on, httpx or requests before: the class its errors module uses)."""
    from huggingface_hub import errors

    return (errors.HfHubHTTPError, getattr(errors, "HTTPError", OSError), OSError, ValueError)


def _space_repo(repo_id: str):
    """HfApi with the Space `repo_id` created (or already there). The token comes from where huggingface_hub
    looks: HF_TOKEN, then `hf auth login`'s file."""
    from huggingface_hub import HfApi

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ClassifyError(f"--push wants USER/NAME (a Space id), got {repo_id!r}")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="space", space_sdk="gradio", exist_ok=True)
    except _hub_errors() as error:
        raise ClassifyError(f"cannot create the Space {repo_id} on {_endpoint()}: {_first_line(error)}") from None
    return api


def _upload(api, repo_id: str, folder: Path) -> str:
    try:
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="space",
                          ignore_patterns=[MARKER], commit_message="platekit: classify export --format space")
    except _hub_errors() as error:
        raise ClassifyError(f"wrote {folder}, but uploading it to the Space {repo_id} failed: {_first_line(error)}; "
                            f"re-run with --push to try again") from None
    return f"https://huggingface.co/spaces/{repo_id}"


def _endpoint() -> str:
    from huggingface_hub import constants
    return constants.ENDPOINT


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:200]


# -- a static web app -----------------------------------------------------------------------------------------------

def write_web(run_dir: Path, folder: Path, ort_dir: Path | None, check_data, int8: bool = False,
              min_agreement: float = INT8_AGREEMENT) -> float:
    """index.html + JS, the model as ONNX (export's agreement check included) and model.json (classes,
    preprocessing, temperature, the on-menu rule); onnxruntime-web from the pinned CDN, or its files copied from
    `ort_dir`. With on-menu statistics the ONNX model gives the pooled features too, and the bundle's
    menu.safetensors goes beside it: the page scores each photo against it as classify.menu does. Returns the ONNX
    agreement figure."""
    from classify.export import export

    settings = read_settings(run_dir)
    if not (run_dir / bundle_format.MENU_FILE).is_file():
        settings["menu"] = None  # as Predictor: a rule without its statistics counts every photo as on the menu
    report = export(run_dir, "onnx", folder / "model.onnx", check_data=check_data, features=bool(settings["menu"]),
                    int8=int8, min_agreement=min_agreement)
    (folder / "model.onnx.json").unlink()  # model.json carries all of it, and the page's own settings
    if settings["menu"]:
        shutil.copyfile(run_dir / bundle_format.MENU_FILE, folder / bundle_format.MENU_FILE)
        settings["menu"]["file"] = bundle_format.MENU_FILE
    settings["ort"] = ({"script": f"ort/{ORT_SCRIPT}", "wasm": "ort/", "integrity": None} if ort_dir else
                       {"script": ORT_CDN + ORT_SCRIPT, "wasm": ORT_CDN, "integrity": ORT_INTEGRITY})
    (folder / "model.json").write_text(json.dumps(settings, indent=1))
    web = resources.files("classify") / "web"
    for name in WEB_ASSETS:
        text = (web / name).read_text(encoding="utf-8")
        if name == "index.html":
            text = _ort_tag(text, settings["ort"])
        (folder / name).write_text(text, encoding="utf-8")
    _write_host_files(folder, space_title(settings, run_dir))
    if ort_dir:
        (folder / "ort").mkdir()
        for name in ORT_FILES:
            shutil.copy2(Path(ort_dir) / name, folder / "ort" / name)
    return report.max_abs_difference


def _write_host_files(folder: Path, title: str) -> None:
    headers = "".join(f"  {name}: {value}\n" for name, value in ISOLATION_HEADERS.items())
    (folder / "_headers").write_text(f"/*\n{headers}", encoding="utf-8")
    space = "\n".join(f"  {name.lower()}: {value}" for name, value in ISOLATION_HEADERS.items())
    (folder / "README.md").write_text(WEB_README.format(
        title=title, quoted=json.dumps(title, ensure_ascii=False), headers=space), encoding="utf-8")


def _ort_tag(html: str, ort: dict) -> str:
    integrity = f' integrity="{ort["integrity"]}" crossorigin="anonymous"' if ort["integrity"] else ""
    return html.replace("<!-- ORT -->", f'<script src="{ort["script"]}"{integrity}></script>')


def check_ort_dir(ort_dir) -> Path:
    ort_dir = Path(ort_dir)
    missing = [name for name in ORT_FILES if not (ort_dir / name).is_file()]
    if missing:
        raise ClassifyError(f"--ort-dir {ort_dir} is not onnxruntime-web's dist/ folder: missing {', '.join(missing)}")
    return ort_dir


def export_web(run_dir, out, ort_dir=None, check_data=None, int8: bool = False,
               min_agreement: float = INT8_AGREEMENT) -> ShareReport:
    """Write the static web app to `out` (`int8`: with the model's 8-bit copy, about 40 % of the float file)."""
    ort_dir = check_ort_dir(ort_dir) if ort_dir else None
    check_out(run_dir, out)
    read_settings(Path(run_dir))  # a bad bundle is refused before anything is written
    difference = []
    files, size = _written(run_dir, out, "web", lambda folder: difference.append(
        write_web(Path(run_dir), folder, ort_dir, check_data, int8, min_agreement)))
    return ShareReport(Path(out), "web", files, size, onnx_difference=difference[0])
