"""Training: fine-tune a pretrained backbone on an ImageFolder set and write a self-describing model bundle."""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from classify import ClassifyError, __version__
from classify import bundle as bundle_format
from classify import data as D
from classify import features, menu, models, report

STRATEGIES = ("auto", "all", "partial", "none")
SCHEDULES = ("cosine", "onecycle", "plateau")
HEADS = ("auto", "linear", "mlp")
PICKS = ("auto", "best", "last")


@dataclass(frozen=True)
class RunConfig:
    """Every training option; these defaults are the only defaults (the CLI reads them from here)."""
    data: str = ""
    out: str = "runs/latest"
    model: str = "auto"                  # auto: efficientnet_lite2 on a GPU; on a CPU lite0, lite1 and lite2 side by side
    weights: str | None = None           # local state dict / safetensors instead of hub or packaged weights
    freeze: str = "auto"                 # auto | all (head only) | partial (last stages + head) | none
    head: str = "auto"                   # linear | mlp | auto (mlp when training the head alone, else linear)
    image_size: int = 0                  # 0: the backbone's own
    epochs: int = 0                      # 0: by strategy (all 25, partial 12, none 15; none 40 on a GPU)
    batch_size: int = 32
    lr: float = 1e-3                     # head learning rate; backbone layers get lr * backbone_lr_scale
    backbone_lr_scale: float = 0.0       # 0: by strategy (0.3 for a full fine-tune, 0.1 for partial)
    weight_decay: float = 0.05
    schedule: str = "cosine"             # cosine (with warmup) | onecycle | plateau
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    aug: float = 0.5                     # augmentation strength 0..1
    views: int = 0                       # augmented views cached per image for frozen layers (0: by strategy)
    feature_cache: str = "auto"          # folder keeping head-only features by image content (auto: $PLATEKIT_CACHE
                                         # or ~/.cache/platekit; none: off)
    patience: int = 0                    # early stopping after this many epochs without a better valid accuracy
                                         # (0: by strategy: all runs the whole schedule, partial and none 5)
    pick_epoch: str = "auto"             # the weights kept: best (valid accuracy) | last | auto (by strategy)
    seed: int = 0
    valid_fraction: float = 0.2          # used only when DATA has no train/valid split
    device: str = "auto"                 # auto | cpu | cuda
    resume: bool = False
    examples_per_class: int = 3
    mlflow: str | None = None            # tracking URI ("" for the default ./mlruns)
    keep: float = menu.KEEP              # share of new in-menu photos the on-menu threshold keeps (menu.pick_threshold)
    not_on_menu: str | None = None       # a folder of photos that are none of the classes (any depth): the on-menu
                                         # score learns to tell them apart (classify.menu.EXPOSED)

    def check(self) -> None:
        if self.freeze not in STRATEGIES:
            raise ClassifyError(f"--freeze must be one of {', '.join(STRATEGIES)}, not {self.freeze!r}")
        if self.head not in HEADS:
            raise ClassifyError(f"--head must be one of {', '.join(HEADS)}, not {self.head!r}")
        if self.pick_epoch not in PICKS:
            raise ClassifyError(f"--pick-epoch must be one of {', '.join(PICKS)}, not {self.pick_epoch!r}")
        if self.schedule not in SCHEDULES:
            raise ClassifyError(f"--schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        if not 0 <= self.aug <= 1:
            raise ClassifyError(f"--aug must be between 0 and 1, not {self.aug}")
        if not 0 < self.keep <= 1:
            raise ClassifyError(f"--keep must be above 0 and at most 1, not {self.keep}")
        if self.not_on_menu is not None and not Path(self.not_on_menu).is_dir():
            raise ClassifyError(f"--not-on-menu {self.not_on_menu} is not a folder")
        if self.not_on_menu is not None and not D.images_in(Path(self.not_on_menu)):
            raise ClassifyError(f"--not-on-menu {self.not_on_menu} holds no images")
        if self.batch_size < 1 or self.epochs < 0 or self.lr <= 0 or self.backbone_lr_scale < 0:
            raise ClassifyError("--batch-size must be >= 1, --epochs >= 0, --lr > 0 and --backbone-lr-scale >= 0")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    metrics: dict
    history: list
    skipped: tuple
    class_counts: dict
    main_process: bool = True            # False in the other processes of `accelerate launch`: they write nothing


# -- strategy ---------------------------------------------------------------------------------------------------

# Where "partial" cuts EfficientNet-shaped backbones: the frozen trunk is run once per cached view, the last
# two stages, conv_head and head train on it. Chosen by measurement on food-dev (bench/train_cpu.py).
PARTIAL_TAIL_BLOCKS = 2


def resolve_strategy(config: RunConfig, device: torch.device) -> str:
    """`auto`: full fine-tune where a GPU makes it fast. On a CPU, head-only on cached features of augmented views:
    on food-dev it scored as well as training the last stages (82.7 vs 81.4 %) in a third of the time
    (bench/train_cpu.py)."""
    if config.freeze != "auto":
        return config.freeze
    if device.type == "cuda":
        return "none"
    return "all"


# The CPU default: the three offline backbones side by side (their pooled features concatenated) under an mlp head,
# trained on their frozen features. Chosen on food-dev valid + food-dev-extra (1,720 photos; bench/cpu_default.py):
# 80.6 % against 77.1 % for lite0 alone and 79.1 % for lite0+lite2, in about 3.5 min instead of 1 on 2 cores.
CPU_MODEL = "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2"


def resolve_model(config: RunConfig, device: torch.device) -> str:
    """`auto`: lite2 where a GPU fine-tunes it in seconds; on a CPU `CPU_MODEL`."""
    if config.model != "auto":
        return config.model
    return "efficientnet_lite2" if device.type == "cuda" else CPU_MODEL


def resolve_head(config: RunConfig, strategy: str) -> str:
    """`auto`: an mlp on frozen features (head only: lite0+lite1+lite2 scored 80.2 % on food-dev-extra with it,
    78.4 % with a linear head; lite0+lite2 78.3 vs 77.4 %), a linear layer on a backbone that trains too."""
    if config.head != "auto":
        return config.head
    return "mlp" if strategy == "all" else "linear"


def resolve_pick(config: RunConfig, strategy: str) -> str:
    """`auto`: the last epoch when only the head trains (it runs the whole schedule, annealed to lr 0), else the epoch
    of the highest valid accuracy. On food-dev's 220 valid photos that peak is noise as often as not: the CPU default
    kept epoch 4 of 25 for one seed (77.2 % on food-dev-extra against 80.3 % for its last epoch). Over 5 seeds the last
    epoch scored 80.2 % (sd 0.2, lowest 80.0 %) against 79.0 % (sd 1.4, lowest 77.2 %) for the peak
    (bench/pick_epoch.py). A fine-tune stops early on a CPU, before it has annealed: there the peak is kept."""
    if config.pick_epoch != "auto":
        return config.pick_epoch
    return "last" if strategy == "all" else "best"


# A full fine-tune on a GPU: food-dev's 880 training images take under a second an epoch (lite2, H100), so it gets the
# schedule that scored best there (bench/train_gpu.py, 3 seeds each): 40 epochs, run to the end, the backbone at 0.3x
# the head's learning rate gave 84.7 % valid against 81.2 % for 15 epochs, early stopping and 0.1x, in 65 s vs 48 s (means).
# 0.3x also on a CPU: lite0, 4 epochs, 75.0 % against 67.3 % with 0.1x (one seed, bench/RESULTS.md).
GPU_FULL_EPOCHS, FULL_BACKBONE_LR_SCALE = 40, 0.3


def default_epochs(strategy: str, device: torch.device) -> int:
    if strategy == "none" and device.type == "cuda":
        return GPU_FULL_EPOCHS
    return {"all": 25, "partial": 12, "none": 15}[strategy]


def default_backbone_lr_scale(strategy: str) -> float:
    return FULL_BACKBONE_LR_SCALE if strategy == "none" else 0.1


# A checkpoint is written after an epoch when this long has passed since the last one (and always after the first):
# a head-only epoch takes under a second, and writing its checkpoint each time was 0.2 s of it (5 of a 36-s warm
# retrain); an interrupted run loses at most this much training.
CHECKPOINT_SECONDS = 30.0
PATIENCE = 5  # epochs without a better valid accuracy before stopping (and, halved, before a plateau schedule's cut)


def default_patience(strategy: str, epochs: int, device: torch.device) -> int:
    """Head-only epochs on cached features take a fraction of a second, and so do a GPU's epochs on a few thousand
    images: stopping early saves nothing there, and it stops before the schedule has annealed, where valid accuracy
    still swings by a point from epoch to epoch (which epoch it stops at then depends on chance as much as on the
    data). On a CPU a fine-tuning epoch costs real time."""
    return epochs if strategy == "all" or device.type == "cuda" else PATIENCE


def default_views(strategy: str, n_train: int, bytes_per_view: int) -> int:
    """Augmented views to cache for frozen layers (4 for head-only, 8 for partial), fewer above ~4 GB."""
    if strategy == "none":
        return 0
    wanted = 4 if strategy == "all" else 8
    budget = 4 * 2**30
    return int(max(1, min(wanted, budget // max(1, n_train * bytes_per_view))))


# -- what trains, on what --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Parts:
    """The classifier cut for a strategy: `frozen` runs once per cached view and never trains (None: nothing is
    frozen); `trainable` is what the optimizer steps, on the frozen part's outputs or on pixels."""
    model: nn.Module
    frozen: nn.Module | None
    trainable: nn.Module
    split_at: int | None = None          # the backbone block where "partial" cuts it


@dataclass(frozen=True)
class Inputs:
    """What the trainable part reads: the decoded images and, with frozen layers, the frozen part's outputs."""
    train: D.ImageCache
    valid: D.ImageCache
    image_size: int
    mean: tuple
    std: tuple
    train_features: torch.Tensor | None = None  # views x N x ... float16 on the CPU; None: it trains on pixels
    valid_features: torch.Tensor | None = None  # N x ...: the centre view

    @property
    def views(self) -> int:
        return 0 if self.train_features is None else len(self.train_features)


# At most this many --not-on-menu photos are decoded (about 200 KB each at 260 px) and fitted: rejection grows from
# 42.9 % with 10 photos of another dish to 47.7 % with 110 (bench/ood_exposure_dose.py); a folder of 100,000 would
# take 20 GB to hold for no measured gain.
MAX_NOT_ON_MENU = 5000


def load_outside(folder: str | None, classes: tuple[str, ...], cache_px: int, splits: tuple[D.ImageCache, ...],
                 progress: bool, log) -> D.ImageCache | None:
    """`--not-on-menu`'s photos decoded (None without it), less any in a folder named after one of `classes` (a
    demo feedback folder holds corrections to menu dishes there) and any also in train or valid (same content): a
    menu photo among them would teach the score to reject the menu."""
    if folder is None:
        return None
    train, valid = splits
    if len(valid.labels) < menu.MIN_VALID_FOR_MIX:
        log(f"--not-on-menu not used: valid has fewer than {menu.MIN_VALID_FOR_MIX} photos to standardize by")
        return None
    paths = D.images_in(Path(folder))
    named = set(classes)
    others = [path for path in paths if not named & set(path.relative_to(folder).parts[:-1])]
    if len(others) < len(paths):
        log(f"--not-on-menu: {len(paths) - len(others)} photo(s) in folders named after a class left out")
    if len(others) > MAX_NOT_ON_MENU:  # a draw by content: the same photos whatever they are called
        others = sorted(others, key=D.content_digest)[:MAX_NOT_ON_MENU]
        log(f"--not-on-menu: {MAX_NOT_ON_MENU} of its photos used (drawn by content)")
    cache = D.load_cache([D.Sample(path, -1) for path in others], cache_px, progress=progress,
                         desc="decode not-on-menu")
    for path, reason in cache.skipped:
        log(f"skipped {path}: {reason}")
    ours = set(train.keys.tolist()) | set(valid.keys.tolist())
    keep = torch.tensor([key not in ours for key in cache.keys.tolist()], dtype=torch.bool)
    if not keep.all():
        log(f"--not-on-menu: {int((~keep).sum())} photo(s) left out, the same as photos in train or valid")
    if not keep.any():
        raise ClassifyError(f"--not-on-menu {folder} has no readable photos left once those also in --data or in "
                            "folders named after a class are left out")
    log(f"--not-on-menu: {int(keep.sum())} photo(s) from {folder}")
    return D.ImageCache(cache.images[keep], cache.labels[keep], tuple(p for p, k in zip(cache.paths, keep) if k),
                        cache.skipped, cache.keys[keep])


def load_splits(layout: D.DataLayout, cache_px: int, progress: bool, log) -> tuple[D.ImageCache, D.ImageCache, dict]:
    """Decode train and valid once; refuse a class with no readable training image or an unreadable valid split.
    Returns both caches and {class: (train images, valid images)}."""
    num_classes = len(layout.classes)
    train_cache = D.load_cache(layout.splits["train"], cache_px, progress=progress, desc="decode train")
    valid_cache = D.load_cache(layout.splits["valid"], cache_px, progress=progress, desc="decode valid")
    for path, reason in train_cache.skipped + valid_cache.skipped:
        log(f"skipped {path}: {reason}")
    counts = {name: (a, b) for name, a, b in zip(layout.classes, D.class_counts(train_cache.labels, num_classes),
                                                  D.class_counts(valid_cache.labels, num_classes))}
    empty = [name for name, (a, _) in counts.items() if a == 0]
    if empty:
        raise ClassifyError(f"class {empty[0]!r} has no readable training images; add some or remove the folder")
    if len(valid_cache.labels) == 0:
        raise ClassifyError("the valid split has no readable images")
    return train_cache, valid_cache, counts


def split_model(model: nn.Module, strategy: str, device: torch.device) -> Parts:
    """What is trained, and on what inputs: pooled features (all), trunk feature maps (partial), pixels (none)."""
    split_at = None
    if strategy == "all":
        frozen, trainable = model.backbone, model.head
    elif strategy == "partial" and models.split_points(model.backbone):
        split_at = models.split_points(model.backbone) - PARTIAL_TAIL_BLOCKS
        frozen, tail = models.trunk_and_tail(model.backbone, split_at)
        trainable = nn.Sequential(tail, model.head)
    else:
        frozen, trainable = None, model
        if strategy == "partial":  # not splittable: freeze all but the last quarter of parameter tensors
            params = list(model.backbone.parameters())
            for p in params[: int(len(params) * 0.75)]:
                p.requires_grad_(False)
    # channels_last makes convolutions ~2.5x faster, but on a CPU it slows BatchNorm in training mode (measured
    # 30 vs 13 ms per layer): there it goes to the frozen, inference-only part alone.
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    elif frozen is not None:
        frozen.to(memory_format=torch.channels_last)
    return Parts(model, frozen, trainable, split_at)


# The frozen layers' batch on a CPU. Small batches stay in the caches: in bench/batch_size.py's bare forward passes
# 4 images a batch ran fastest per image for every Lite model; but in a real run of the CPU default (lite0+lite1+lite2,
# food-dev, bench/train_cpu.py) batches of 4 took 238 s against 195 s for 16, so 16 it stays.
FROZEN_BATCH = 16


def cache_frozen(frozen: nn.Module, inputs: Inputs, config: RunConfig, strategy: str, architecture: str,
                 cache_px: int, accelerator, progress: bool, log) -> Inputs:
    """Run the frozen layers once per cached view of the training images (once, centred, for valid): `inputs` with
    their outputs. Head-only training reads and fills the feature cache (classify.features)."""
    device = accelerator.device
    for p in frozen.parameters():
        p.requires_grad_(False)
    frozen.eval()
    with torch.inference_mode(), accelerator.autocast():
        probe = frozen(D.model_input(inputs.train.images[:1], inputs.image_size, inputs.mean, inputs.std, device))
    shape = tuple(probe.shape[1:])
    views = config.views or default_views(strategy, len(inputs.train.labels), probe[0].numel() * 2)
    log(f"strategy {strategy}: caching {views} view(s) of the frozen layers")
    # Head-only training keeps the pooled features of every view on disk, keyed on image content (a few KB
    # each); partial training's feature maps are 50-100x larger and are computed afresh.
    # Under several processes the main one fills the feature cache first and the others read it back (one writer
    # to the SQLite file, and each feature computed once).
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
    store, fingerprint = None, ""
    if strategy == "all" and (folder := features.cache_folder(config.feature_cache)) is not None:
        fingerprint = features.fingerprint(frozen, architecture=architecture, image_size=inputs.image_size,
                                           cache_px=cache_px, mean=list(inputs.mean), std=list(inputs.std),
                                           device=device.type, mixed_precision=accelerator.mixed_precision)
        store = features.FeatureStore(folder)
    common = dict(image_size=inputs.image_size, mean=inputs.mean, std=inputs.std, seed=config.seed, device=device,
                  autocast=accelerator.autocast, store=store, fingerprint=fingerprint,
                  batch_size=FROZEN_BATCH if device.type == "cpu" else 256, progress=progress)
    train_features, train_read = features.frozen_features(frozen, inputs.train, views, shape,
                                                          augment_strength=config.aug, desc="cache train", **common)
    valid_features, valid_read = features.frozen_features(frozen, inputs.valid, 1, shape, augment_strength=0,
                                                          desc="cache valid", **common)
    if store:
        evicted = store.close()
        total = views * len(inputs.train.labels) + len(inputs.valid.labels)
        log(f"feature cache {store.path} not used: {store.error} (delete it to start a new one)" if store.error
            else f"feature cache {store.path}: {train_read + valid_read} of {total} view(s) read, the others computed"
            + (f"; {evicted} least recently used view setting(s) deleted to stay under "
               f"{store.max_bytes / 2**20:.0f} MB" if evicted else ""))
    if accelerator.is_main_process:
        accelerator.wait_for_everyone()
    return replace(inputs, train_features=train_features, valid_features=valid_features[0])


def build_optimizer(model: nn.Module, trainable: nn.Module, config: RunConfig,
                    backbone_lr_scale: float) -> torch.optim.AdamW:
    """AdamW over what trains: the head at `lr`, any trainable backbone layers at `lr x backbone_lr_scale`."""
    head_params = list(model.head.parameters())
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in trainable.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": head_params, "lr": config.lr}]
    if body_params:
        groups.append({"params": body_params, "lr": config.lr * backbone_lr_scale})
    # foreach: the multi-tensor update, the same numbers as the default per-tensor loop (checked bit for bit) in
    # 14 ms a step of the CPU default's head instead of 23 (on the CPU, PyTorch picks the loop by default).
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay, foreach=True)


# -- the loop --------------------------------------------------------------------------------------------------

def train(config: RunConfig, progress: bool = False, log: Callable[[str], None] = lambda message: None) -> TrainResult:
    """Train on `config.data`, write the bundle to `config.out`, return its metrics."""
    from accelerate import Accelerator

    config.check()
    started = time.time()
    D.tune_cpu_allocator()
    out = Path(config.out)
    check_out(out)
    if config.resume and not (out / "checkpoint.json").is_file():
        raise ClassifyError(f"nothing to resume in {out}: no checkpoint.json")
    layout = D.find_layout(config.data, seed=config.seed, valid_fraction=config.valid_fraction)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    accelerator = Accelerator(cpu=cpu, mixed_precision="no" if cpu else "bf16")
    device = accelerator.device
    if not accelerator.is_main_process:  # under `accelerate launch`, one process speaks for all
        log = lambda message: None  # noqa: E731
    architecture = resolve_model(config, device)
    strategy = resolve_strategy(config, device)
    # Head-only training gets no dropout: its inputs already vary over the cached views, and dropout's masks, drawn in
    # batch order, made retrains on the same images less one differ in valid accuracy by 0.66 points (standard
    # deviation; 0.20 without dropout), at the same accuracy (80.4 vs 80.5 %, 5 food-dev folds, lite0).
    head = resolve_head(config, strategy)
    model, spec, extra = models.create(architecture, len(layout.classes), head=head, weights=config.weights,
                                       dropout=0.0 if strategy == "all" else 0.2)
    image_size = _input_size(config, spec)
    cache_px = D.eval_size(image_size, spec.crop_pct)
    train_cache, valid_cache, counts = load_splits(layout, cache_px, progress, log)
    outside = load_outside(config.not_on_menu, layout.classes, cache_px, (train_cache, valid_cache), progress, log)
    epochs = config.epochs or default_epochs(strategy, device)
    patience = config.patience or default_patience(strategy, epochs, device)
    backbone_lr_scale = config.backbone_lr_scale or default_backbone_lr_scale(strategy)

    parts = split_model(model.to(device), strategy, device)
    inputs = Inputs(train_cache, valid_cache, image_size, spec.mean, spec.std)
    if parts.frozen is not None:
        inputs = cache_frozen(parts.frozen, inputs, config, strategy, architecture, cache_px, accelerator, progress,
                              log)
    else:
        log(f"strategy {strategy}: full forward pass per step")
    optimizer = build_optimizer(model, parts.trainable, config, backbone_lr_scale)
    steps_per_epoch = math.ceil(len(train_cache.labels) / config.batch_size / accelerator.num_processes)
    scheduler = _scheduler(optimizer, config, epochs, steps_per_epoch)
    trainable, optimizer = accelerator.prepare(parts.trainable, optimizer)
    parts = replace(parts, trainable=trainable)
    pick = resolve_pick(config, strategy)
    history, best, best_state = kept_epoch(pick, *run_epochs(parts, inputs, optimizer, scheduler, config, accelerator,
                                                             out, epochs, patience, progress, log))

    if best_state is not None:
        _load_changing(model, best_state)
    model.eval()
    valid_logits = validate(parts, inputs, accelerator).numpy()
    temperature, metrics = score_valid(valid_logits, inputs, layout.classes)
    (menu_method, menu_threshold, menu_mix), bank, exposure = menu_statistics(model, inputs, strategy, accelerator,
                                                                              config.keep, valid_logits, outside)
    log(f"temperature {temperature:.3f} (valid ECE {metrics['ece_uncalibrated']:.3f} -> {metrics['ece']:.3f}); "
        f"on-menu threshold {menu_threshold:.3f} {menu.keep_words(len(valid_logits), config.keep)}")
    metrics.update({"split": "valid", "best_epoch": best["epoch"], "epochs_run": len(history),
                    "train_seconds": round(time.time() - started, 1), "strategy": strategy})
    resolved = {
        "architecture": architecture, "head": head, "classes": list(layout.classes), "image_size": image_size,
        "cache_size": cache_px, "crop_pct": spec.crop_pct, "mean": list(spec.mean), "std": list(spec.std),
        "strategy": strategy, "epochs": epochs, "patience": patience, "backbone_lr_scale": backbone_lr_scale,
        "pick_epoch": pick,
        "views": inputs.views, "split_at_block": parts.split_at, "processes": accelerator.num_processes,
        "num_features": model.num_features, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(), "device": str(device), **extra,
        "temperature": temperature, "calibrated": True, "menu_method": menu_method, "menu_threshold": menu_threshold,
        "menu_k": menu.DEFAULT_K, "menu_mix": menu_mix, "splits": _split_folders(layout),
        "format_version": bundle_format.FORMAT_VERSION,
    }
    if accelerator.is_main_process:
        write_run(out, model, config, resolved, metrics, history, (bank, exposure), layout)
    accelerator.wait_for_everyone()  # no process returns (and reads the bundle) before the main one has written it
    skipped = train_cache.skipped + valid_cache.skipped
    return TrainResult(out, metrics, history, skipped, counts, accelerator.is_main_process)


def run_epochs(parts: Parts, inputs: Inputs, optimizer, scheduler, config: RunConfig, accelerator, out: Path,
               epochs: int, patience: int, progress: bool, log) -> tuple[list, dict, dict | None]:
    """Epochs from the last checkpoint (with --resume) up to `epochs` or early stopping, checkpointing after the first
    and then every CHECKPOINT_SECONDS; returns
    the history, the best epoch ({"accuracy", "epoch"}) and its weights (None when no epoch ran)."""
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    out.mkdir(parents=True, exist_ok=True)
    history, best, start_epoch, best_state = [], {"accuracy": -1.0, "epoch": 0}, 0, None
    saved_at = -math.inf
    if config.resume:
        start_epoch, history, best, best_state = _load_checkpoint(out, parts.model, optimizer, scheduler)
        log(f"resuming after epoch {start_epoch}")
    for epoch in range(start_epoch, epochs):
        seen, loss_sum, correct, steps, seconds = train_one_epoch(parts, inputs, optimizer, scheduler, loss_fn,
                                                                  accelerator, config, epoch, epochs, progress)
        probabilities = validate(parts, inputs, accelerator).softmax(-1)
        valid_loss = nn.functional.nll_loss(probabilities.clamp_min(1e-8).log(), inputs.valid.labels).item()
        valid_accuracy = (probabilities.argmax(-1) == inputs.valid.labels).float().mean().item()
        if config.schedule == "plateau":
            scheduler.step(valid_loss)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
               "valid_loss": valid_loss, "valid_accuracy": valid_accuracy, "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(seconds, 2), "images_per_second": round(seen / max(seconds, 1e-9), 1),
               "steps": steps}  # optimizer steps per process
        history.append(row)
        if valid_accuracy > best["accuracy"]:
            best = {"accuracy": valid_accuracy, "epoch": epoch + 1}
            best_state = {k: v.detach().clone() for k, v in _changing_state(accelerator.unwrap_model(parts.model)).items()}
        if accelerator.is_main_process and time.time() - saved_at >= CHECKPOINT_SECONDS:
            _save_checkpoint(out, parts.model, optimizer, scheduler, epoch + 1, history, best, best_state)
            saved_at = time.time()
        log(f"epoch {epoch + 1}/{epochs}: loss {row['train_loss']:.3f} train acc {row['train_accuracy']:.3f} "
            f"valid acc {valid_accuracy:.3f} ({row['images_per_second']:.0f} img/s)")
        if epoch + 1 - best["epoch"] >= patience:
            log(f"early stop: no better valid accuracy for {patience} epochs")
            break
    return history, best, best_state


def kept_epoch(pick: str, history: list, best: dict, best_state: dict | None) -> tuple[list, dict, dict | None]:
    """run_epochs' result with the epoch `pick` keeps: its best one, or the last (whose weights the model holds)."""
    if pick == "last" and history:
        return history, {"accuracy": history[-1]["valid_accuracy"], "epoch": history[-1]["epoch"]}, None
    return history, best, best_state


def train_one_epoch(parts: Parts, inputs: Inputs, optimizer, scheduler, loss_fn, accelerator, config: RunConfig,
                    epoch: int, epochs: int, progress: bool) -> tuple[int, float, int, int, float]:
    """One pass over this process's shard of the epoch's keyed order of the training images; returns the images
    seen, their summed loss and correct predictions (over all processes), optimizer steps and seconds."""
    from tqdm.auto import tqdm

    device, cache = accelerator.device, inputs.train
    parts.trainable.train()
    if parts.frozen is not None:
        parts.frozen.eval()
    # Each process takes its own shard of every epoch's permutation (accelerate launch on several GPUs).
    rank, world = accelerator.process_index, accelerator.num_processes
    order = D.keyed_order(cache.keys, config.seed, D.STREAM_EPOCH_ORDER, epoch)
    # Every process takes the same number of batches of the same sizes (a process that skipped a step its peers
    # took would wait for them forever): pad the permutation with its first images, as DistributedSampler does.
    order = torch.cat([order, order[:-len(order) % world]])[rank::world]
    view_of = (D.keyed_uniforms(cache.keys, 1, config.seed, D.STREAM_EPOCH_VIEW, epoch)[:, 0] * inputs.views).long() \
        if inputs.views else None
    train_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    seen, loss_sum, correct, steps, tick = 0, 0.0, 0, 0, time.time()
    bar = tqdm(range(0, len(order), config.batch_size), desc=f"epoch {epoch + 1}/{epochs}",
               disable=not progress or not accelerator.is_main_process, leave=False)
    for start in bar:
        index = order[start:start + config.batch_size]
        if len(index) < 2:  # BatchNorm cannot train on one sample
            continue
        labels = cache.labels[index].to(device)
        if inputs.train_features is not None:
            x = inputs.train_features[view_of[index], index].to(device, torch.float32)
        else:
            uniforms = D.keyed_uniforms(cache.keys[index], D.AUGMENT_DRAWS, config.seed, D.STREAM_EPOCH_AUGMENT, epoch)
            pixels = D.augment(cache.images[index].to(device), inputs.image_size, config.aug, uniforms)
            x = D.normalize(pixels, inputs.mean, inputs.std)
        x = x.contiguous(memory_format=train_format)
        with accelerator.autocast():
            logits = parts.trainable(x)
            loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        if config.schedule != "plateau":
            scheduler.step()
        seen += len(index)
        steps += 1
        loss_sum += loss.item() * len(index)
        correct += (logits.argmax(-1) == labels).sum().item()
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                        img_s=f"{seen / (time.time() - tick):.0f}")
    seconds = time.time() - tick
    if world > 1:  # the epoch's loss and accuracy over all processes' shards, not the main one's alone
        totals = accelerator.reduce(torch.tensor([seen, loss_sum, correct], dtype=torch.float64, device=device))
        seen, loss_sum, correct = int(totals[0]), totals[1].item(), int(totals[2])
    return seen, loss_sum, correct, steps, seconds


def validate(parts: Parts, inputs: Inputs, accelerator, batch_size: int = 128) -> torch.Tensor:
    """Logits of the valid images (N x C float32, CPU): from their cached centre-view features when layers are
    frozen, else from their centre crops."""
    parts.trainable.eval()
    frozen = inputs.valid_features is not None

    def forward(batch):
        if frozen:
            x = batch.to(accelerator.device, torch.float32)
        else:
            x = D.model_input(batch, inputs.image_size, inputs.mean, inputs.std, accelerator.device)
        with accelerator.autocast():
            return parts.trainable(x).float()
    return D.in_batches(forward, inputs.valid_features if frozen else inputs.valid.images, batch_size)


def score_valid(logits: np.ndarray, inputs: Inputs, classes) -> tuple[float, dict]:
    """The temperature fitted on valid's logits, and valid's metrics with it (calibration figures included)."""
    from classify import calibration
    from classify.evaluate import calibration_metrics, metrics_from_probabilities

    labels = inputs.valid.labels.numpy()
    temperature = calibration.fit_temperature(logits, labels)
    metrics = metrics_from_probabilities(calibration.softmax(logits, temperature), labels, classes)
    metrics.update(calibration_metrics(logits, labels, temperature))
    return temperature, metrics


def menu_statistics(model: nn.Module, inputs: Inputs, strategy: str, accelerator, keep: float,
                    valid_logits: np.ndarray, outside: D.ImageCache | None = None
                    ) -> tuple[tuple[str, float, dict | None], torch.Tensor, dict | None]:
    """The on-menu rule (method, threshold, mix of the scores: classify.menu.fit_rule), the bank of normalized
    pooled features (train and valid) the kNN part is measured against, and with `outside` (photos not on the menu)
    the classifier telling them apart (classify.menu.fit_exposure; None without)."""
    if strategy == "all":  # the cached centre views are the pooled features
        train_features, valid_features = inputs.train_features[0].float(), inputs.valid_features.float()
    else:
        train_features = pooled_features(model.backbone, inputs.train, inputs, accelerator)
        valid_features = pooled_features(model.backbone, inputs.valid, inputs, accelerator)
    # The threshold is picked on valid against the training photos alone (each valid photo is new to them, as a
    # user's is); the bank then holds the valid photos too: more of each dish to be near, so at least `keep` of new
    # in-menu photos stay on the menu (measured in bench/ood.py on food-dev-extra).
    valid_knn = menu.scores(menu.normalized(train_features), valid_features)
    exposure = None
    if outside is not None:
        outside_features = pooled_features(model.backbone, outside, inputs, accelerator)
        exposure = menu.fit_exposure(train_features, inputs.train.labels.numpy(), outside_features)
    rule = menu.fit_rule(valid_knn, valid_logits.max(1), keep,
                         None if exposure is None else menu.exposure_scores(exposure, valid_features))
    if exposure is not None:
        rule[2]["exposure_photos"] = len(outside.labels)  # for the demo's card
    return rule, menu.normalized(torch.cat([train_features, valid_features])), exposure


def pooled_features(backbone: nn.Module, cache: D.ImageCache, inputs: Inputs, accelerator,
                    batch_size: int = 64) -> torch.Tensor:
    """The backbone's pooled features of each cached image's centre crop (N x D float32, CPU)."""
    backbone.eval()

    def forward(batch):
        x = D.model_input(batch, inputs.image_size, inputs.mean, inputs.std, accelerator.device)
        with accelerator.autocast():
            return backbone(x).float()
    return D.in_batches(forward, cache.images, batch_size)


def write_run(out: Path, model: nn.Module, config: RunConfig, resolved: dict, metrics: dict, history: list,
              menu_statistics: tuple[torch.Tensor, dict | None], layout: D.DataLayout) -> None:
    """The whole bundle (weights, config, on-menu statistics, reports, examples), then the checkpoint removed."""
    from classify.evaluate import write_reports

    menu.save(out / bundle_format.MENU_FILE, *menu_statistics)
    write_bundle(out, model, config, resolved, metrics, history)
    write_reports(out, metrics, layout.classes)
    _write_examples(out, layout, config.examples_per_class)
    # held_out.json (evaluate's figures on a split this run's model never saw) described the model replaced here
    for name in ("checkpoint.json", "checkpoint.safetensors", bundle_format.HELD_OUT_FILE):
        (out / name).unlink(missing_ok=True)
    if config.mlflow is not None:
        _log_mlflow(config, resolved, metrics, history, out)


def _input_size(config: RunConfig, spec) -> int:
    image_size = config.image_size or spec.image_size
    if not bundle_format.MIN_IMAGE_SIZE <= image_size <= bundle_format.MAX_IMAGE_SIZE:  # what a bundle may name
        raise ClassifyError(f"--image-size {image_size} is too small for a backbone: give 0 (the backbone's own) or "
                            f"{bundle_format.MIN_IMAGE_SIZE}-{bundle_format.MAX_IMAGE_SIZE}")
    return image_size


def _scheduler(optimizer, config: RunConfig, epochs: int, steps_per_epoch: int):
    total = max(1, epochs * steps_per_epoch)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, [g["lr"] for g in optimizer.param_groups], total_steps=total)
    if config.schedule == "plateau":
        patience = max(1, (config.patience or PATIENCE) // 2)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.3, patience=patience)
    warmup = min(total // 2, int(config.warmup_epochs * steps_per_epoch))

    def factor(step):
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _is_run(folder: Path) -> bool:
    """A bundle (config.json naming architecture and classes) or an interrupted run (checkpoint.json)."""
    for name, keys in (("config.json", {"architecture", "classes"}), ("checkpoint.json", {"epoch", "history"})):
        try:
            found = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(found, dict) and keys <= set(found):
            return True
    return False


def check_out(out: Path) -> None:
    """Train overwrites its own file names in --out and replaces its examples/: refuse a file, or a folder holding
    anything when it is not a run (new, empty or an earlier run's folder are fine)."""
    if out.is_symlink() and not out.exists() or out.exists() and not out.is_dir():
        raise ClassifyError(f"--out {out} is a file; give a folder for the run (a new one, or an earlier run's)")
    if out.is_dir() and not _is_run(out):
        first = next(iter(sorted(out.iterdir())), None)
        if first is not None:
            raise ClassifyError(f"--out {out} is not a training run but holds files ({first.name}); pick a new "
                                f"folder or an earlier run's")


# -- bundle ----------------------------------------------------------------------------------------------------

def write_bundle(out: Path, model: nn.Module, config: RunConfig, resolved: dict, metrics: dict, history: list) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    bundle_format.write(out, bundle_format.from_json({**asdict(config), **resolved}))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if history:
        with open(out / "history.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
        run = f"run {out.name}: {resolved['architecture']}, {resolved['strategy']}"
        report.save_figure(report.curves_figure(history, run, metrics.get("best_epoch")), out / "curves.png")


def _split_folders(layout: D.DataLayout) -> dict:
    """The folders training read its train and valid photos from: evaluation on them is not held out."""
    root = layout.root.resolve()
    if layout.split_made:
        return {"train": str(root), "valid": str(root)}
    return {name: str(root / name) for name in ("train", "valid")}


def _write_examples(out: Path, layout: D.DataLayout, per_class: int) -> None:
    """A few images per class, small, so the demo needs nothing but the bundle."""
    from PIL import Image

    folder = out / bundle_format.EXAMPLES_DIR
    _remove_old_examples(folder)
    source = layout.splits.get("valid") or layout.splits["train"]
    written = {}
    for sample in source:
        name = layout.classes[sample.label]
        if written.get(name, 0) >= per_class:
            continue
        try:
            image = Image.fromarray(D.decode(sample.path, 256))
        except ClassifyError:
            continue
        (folder / _safe_name(name)).mkdir(parents=True, exist_ok=True)
        image.save(folder / _safe_name(name) / f"{written.get(name, 0)}.jpg", quality=88)
        written[name] = written.get(name, 0) + 1


def _remove_old_examples(folder: Path) -> None:
    """An earlier run's examples (examples/<class>/<n>.jpg, the names _write_examples gives); a file of another name,
    such as a photo a user added for the demo, stays, and so does its folder."""
    if not folder.is_dir():
        return
    for class_dir in folder.iterdir():
        if class_dir.is_dir() and not class_dir.is_symlink():
            for path in class_dir.iterdir():
                if path.is_file() and not path.is_symlink() and path.suffix == ".jpg" and path.stem.isdigit():
                    path.unlink()
            if not any(class_dir.iterdir()):
                class_dir.rmdir()


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "_"


def _versions() -> dict:
    import timm
    import torchvision
    return {"platekit": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "python": platform.python_version()}


# -- checkpoint for --resume (safetensors + JSON: no pickle) ------------------------------------------------------

def _frozen(model) -> set[str]:
    return {name for name, parameter in model.named_parameters() if not parameter.requires_grad}


def _changing_state(model) -> dict:
    """What training changes: every buffer and each parameter that takes a gradient. A frozen backbone's weights are
    left out of the checkpoints and the best epoch's copy (rebuilt as pretrained on resume): with the CPU default's
    three backbones that was 120 MB written every epoch, 4.7 s of an 18 s retrain."""
    frozen = _frozen(model)
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def _load_changing(model, state: dict) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - _frozen(model):
        raise ClassifyError("the checkpoint does not match this model (another architecture or freeze?): "
                            f"{', '.join([*unexpected, *sorted(set(missing) - _frozen(model))][:3])}")


def _save_checkpoint(out, model, optimizer, scheduler, epoch, history, best, best_state):
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in _changing_state(model).items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v.cpu().contiguous() for k, v in best_state.items()})
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for name, value in state.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).cpu().contiguous()
    save_file(tensors, str(out / "checkpoint.safetensors.tmp"))
    meta = {"epoch": epoch, "history": history, "best": best, "param_groups": optimizer_state["param_groups"],
            "scheduler": {k: v for k, v in scheduler.state_dict().items() if isinstance(v, (int, float, list, type(None)))}}
    (out / "checkpoint.json.tmp").write_text(json.dumps(meta))
    os.replace(out / "checkpoint.safetensors.tmp", out / "checkpoint.safetensors")
    os.replace(out / "checkpoint.json.tmp", out / "checkpoint.json")


def _load_checkpoint(out, model, optimizer, scheduler):
    from safetensors.torch import load_file

    meta = json.loads((out / "checkpoint.json").read_text())
    tensors = load_file(str(out / "checkpoint.safetensors"))
    _load_changing(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    state = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler_state = scheduler.state_dict()
    scheduler_state.update(meta["scheduler"])
    scheduler.load_state_dict(scheduler_state)
    return meta["epoch"], meta["history"], meta["best"], best_state


def _log_mlflow(config, resolved, metrics, history, out):
    try:
        import mlflow
    except ImportError:
        raise ClassifyError("--mlflow needs the mlflow package: pip install 'platekit[mlflow]'") from None
    uri = config.mlflow or "./mlruns"
    if "://" not in uri or uri.startswith("file:"):
        # MLflow 3 gates its local file store behind this switch; a folder of runs is what --mlflow PATH asks for.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_name=Path(config.out).name):
        mlflow.log_params({k: v for k, v in {**asdict(config), **resolved}.items()
                           if isinstance(v, (int, float, str, bool)) or v is None})
        for row in history:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.log_artifacts(str(out), artifact_path="bundle")


def config_from_args(values: dict) -> RunConfig:
    """Build a RunConfig from a mapping, ignoring keys it does not know (CLI namespaces carry more)."""
    names = {f.name for f in fields(RunConfig)}
    return replace(RunConfig(), **{k: v for k, v in values.items() if k in names and v is not None})
