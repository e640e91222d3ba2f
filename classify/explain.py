"""Where the model looked: Grad-CAM heat maps of the top class on the crop it classified, and their PNG files."""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from classify import ClassifyError
from classify import data as D
from classify import models
from classify.predict import TOP_K, Prediction

log = logging.getLogger("classify")
# `predict --explain` lists here each PNG it wrote ("sha256  name" per line): what it may overwrite later.
WRITTEN = ".platekit-explain"


@dataclass(frozen=True)
class Explanation:
    """One image's prediction and the heat map behind its top class, both on the crop the model saw."""
    prediction: Prediction  # calibrated top-k and the on-menu verdict, from the same forward pass as the map
    crop: np.ndarray  # S x S x 3 uint8: the preprocessed input (shorter side resized, centre crop)
    heat: np.ndarray  # S x S float32 in [0, 1]: Grad-CAM of the top class

    @property
    def predictions(self) -> list:
        """[(class, probability), ...], most likely first."""
        return self.prediction.top

    def overlay(self, image_weight: float = 0.5) -> Image.Image:
        """The heat map (jet colours) blended over the crop."""
        from pytorch_grad_cam.utils.image import show_cam_on_image
        return Image.fromarray(show_cam_on_image(self.crop.astype(np.float32) / 255, self.heat, use_rgb=True,
                                                 image_weight=image_weight))


def feature_maps(model: nn.Module, image_size: int) -> list[nn.Module]:
    """For each single backbone in the model (several when they run side by side), the module that computes the
    feature map its global pooling reads (the last convolutional stage, whatever the family: timm's bn2,
    torchvision's layer4 or features, a transformers ResNet's last stage).

    Found by running the model once on a blank input: the last layer (a module without children) that turns an
    N x C x H x W input (H x W > 1) into one value per channel is the global pooling (earlier ones are
    squeeze-excitation blocks); the last module to return that very tensor made it."""
    made_by, pooled = {}, []
    seen = []  # every output, kept alive so that no tensor id is reused during the pass

    def watch(module, inputs, output):
        seen.append(output)
        if not isinstance(output, torch.Tensor):
            return
        made_by[id(output)] = module
        given = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        is_layer = next(module.children(), None) is None
        if (is_layer and given is not None and given.dim() == 4 and given.shape[-2] * given.shape[-1] > 1
                and (output.dim() < 4 or output.shape[-2] * output.shape[-1] == 1)):
            pooled.append(id(given))  # kept alive by `seen`

    found = []
    for branch in models.branches(model.backbone):
        made_by.clear()
        pooled.clear()
        hooks = [module.register_forward_hook(watch) for module in branch.modules()]
        try:
            device = next(model.parameters()).device
            with torch.no_grad():
                model(torch.zeros(1, 3, image_size, image_size, device=device))
        finally:
            for hook in hooks:
                hook.remove()
        if not pooled or pooled[-1] not in made_by:
            raise ClassifyError("heat maps need a convolutional backbone that pools its last feature map "
                                "(a vision transformer has none)")
        found.append(made_by[pooled[-1]])
    return found


class Explainer:
    """Grad-CAM (pytorch_grad_cam) over a copy of a Predictor's model: `Explainer(predictor).explain(image)`.

    The copy keeps the hooks off the predictor's own model, which may serve plain predictions meanwhile; a lock
    serializes explanations, since the hooks collect one image's activations at a time.
    """

    def __init__(self, predictor):
        from pytorch_grad_cam import GradCAM

        self.predictor = predictor
        self.model = copy.deepcopy(predictor.model).eval().requires_grad_(False)
        layers = feature_maps(self.model, predictor.image_size)
        # Only the gradient at those layers is needed: cutting the graph there makes the backward pass run through
        # the pooling and the head alone, not the whole network (prepend: before Grad-CAM's own hooks see it).
        for layer in layers:
            layer.register_forward_hook(lambda module, _, output: output.detach().requires_grad_(True), prepend=True)
        # Backbones side by side: one map per branch, which pytorch_grad_cam scales to the input and averages.
        self.cam = GradCAM(model=self.model, target_layers=layers)
        self.pooled = None  # the head's input in the last PyTorch pass: the pooled features the menu score needs
        self.model.head.register_forward_pre_hook(lambda module, inputs: setattr(self, "pooled", inputs[0].detach()))
        self.lock = threading.Lock()
        self.fast = self._fast_forward(layers)

    def _fast_forward(self, layers: list[nn.Module]):
        """ONNX Runtime's forward with the feature maps as outputs, where the predictor scores through it and the
        heat maps it gives are PyTorch's (checked here once); else None.

        Why by hand around the grad-cam package: it needs a PyTorch forward, which in a fresh process took the CPU
        default's heat map to +166 ms over the prediction. The maps feed the global pooling directly, so the top
        class's gradient at each map is the head's gradient at the pooled features spread evenly over the map: one
        ONNX Runtime pass and a backward through the head alone; the package's own functions do the rest."""
        p = self.predictor
        if p.onnx is None:
            return None
        from classify import features, runtime

        names = {id(module): name for name, module in self.model.named_modules()}
        try:
            forward = runtime.OnnxForward(p.model, p.image_size, features.cache_folder("auto"),
                                          tuple(names[id(layer)] for layer in layers))
        except Exception as error:  # an op the exporter lacks: the PyTorch path still works
            log.info("heat maps through PyTorch: %s", str(error).splitlines()[0][:160])
            return None
        pixels = torch.rand(1, 3, p.image_size, p.image_size, generator=torch.Generator().manual_seed(0)) * 255
        x = D.normalize(pixels, p.mean, p.std)
        with torch.enable_grad():
            reference = self.cam(input_tensor=x, targets=None)[0]
        heat, _, _ = self._fast_heat(forward, x)
        if not np.allclose(heat, reference, atol=1e-3):
            log.info("heat maps through PyTorch: ONNX Runtime's differ by %.4f", float(np.abs(heat - reference).max()))
            return None
        return forward

    def _fast_heat(self, forward, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Grad-CAM of the top class, pooled features, logits) for one normalized input, from `_fast_forward`'s outputs."""
        from pytorch_grad_cam.utils.image import scale_cam_image

        pooled, logits, *maps = forward(x)
        pooled = pooled.clone().requires_grad_(True)
        with torch.enable_grad():
            self.model.head(pooled)[0, int(logits[0].argmax())].backward()
        per_layer, start = [], 0
        for layer, activations in zip(self.cam.target_layers, maps):
            channels, area = activations.shape[1], activations.shape[2] * activations.shape[3]
            grads = (pooled.grad[:, start:start + channels] / area)[:, :, None, None].expand_as(activations)
            start += channels
            cam = self.cam.get_cam_image(x, layer, None, activations.numpy(), grads.numpy(), False)
            per_layer.append(scale_cam_image(np.maximum(cam, 0), self.cam.get_target_width_height(x))[:, None, :])
        return self.cam.aggregate_multi_layers(per_layer)[0], pooled.detach().numpy(), logits.numpy()

    def explain(self, image, k: int = TOP_K) -> Explanation:
        """The prediction (top-k, on-menu verdict) and the top class's heat map for one image (path, file object or
        PIL image), from one forward pass on the same preprocessed input `Predictor.prediction` uses: a caller that
        wants both needs no second pass."""
        p = self.predictor
        crop = D.center_crop(p.preprocess(image), p.image_size)
        x = D.normalize(crop.unsqueeze(0).to(p.device), p.mean, p.std)
        with self.lock, torch.enable_grad():
            if self.fast is not None:
                heat, pooled, logits = self._fast_heat(self.fast, x)
            else:
                heat = self.cam(input_tensor=x, targets=None)[0]  # targets None: the top class
                pooled = self.pooled.float().cpu().numpy()
                logits = self.cam.outputs.detach().float().cpu().numpy()
        prediction = p.predictions_from_outputs(pooled, logits, k=k)[0]
        return Explanation(prediction, crop.permute(1, 2, 0).numpy().copy(), np.clip(heat, 0, 1).astype(np.float32))


# --- the overlay files ------------------------------------------------------------------------------------------

def _written(out_dir: Path) -> dict[str, str]:
    """name -> sha256 of each PNG `predict --explain` wrote into out_dir (its last write of that name)."""
    try:
        lines = (out_dir / WRITTEN).read_text().splitlines()
    except FileNotFoundError:
        return {}
    return {name: digest for digest, _, name in (line.partition("  ") for line in lines) if name}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def overlay_targets(out_dir: str | Path, sources: list) -> list[Path]:
    """Where each source image's heat map goes: OUT_DIR/<its name without suffix>.png (-2, -3, ... added when two
    sources share a name). Raises ClassifyError, before anything is written, if one of those files exists and is
    not one this command wrote there (unchanged since)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ClassifyError(f"--explain {out_dir} is a file, not a folder")
    owned = _written(out_dir) if out_dir.is_dir() else {}
    targets, taken = [], set()
    for source in sources:
        stem, n = Path(source).stem or "image", 1
        name = f"{stem}.png"
        while name in taken:
            n += 1
            name = f"{stem}-{n}.png"
        taken.add(name)
        target = out_dir / name
        if target.exists() and (not target.is_file() or owned.get(name) != _sha256(target)):
            raise ClassifyError(f"{target} exists and was not written by predict --explain; "
                                f"move it away or choose another folder")
        targets.append(target)
    return targets


def save_overlay(image: Image.Image, target: Path) -> None:
    """Write the PNG beside a temporary name, then into place: linked when new (never over a file that appeared
    meanwhile), replacing only a file this command wrote, unchanged since; then note it as written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    image.save(temporary, format="PNG")
    try:
        if target.exists() and _written(target.parent).get(target.name) == _sha256(target):
            os.replace(temporary, target)
        else:
            try:
                os.link(temporary, target)
            except FileExistsError:
                raise ClassifyError(f"{target} appeared while writing and is not ours; left as it is") from None
    finally:
        temporary.unlink(missing_ok=True)
    with open(target.parent / WRITTEN, "a") as f:
        f.write(f"{_sha256(target)}  {target.name}\n")
