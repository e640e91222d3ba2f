"""Claim: training end to end (decode once into a uint8 cache, augment on batched tensors, step) runs at >= 60 % of
the same model's pure training-step rate on random tensors; a plain DataLoader decoding JPEGs with PIL per step is
far below it. Measured on whatever device is present (CPU here unless a GPU is lent).
  python bench/train_throughput.py [--model efficientnet_lite0] [--steps 12]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import FOOD_DEV, append, machine, table  # noqa: E402

from classify import data as D  # noqa: E402
from classify import models  # noqa: E402


def step_rate(model, batches, device, steps):
    """img/s of forward + backward + AdamW step over batches produced by `batches()` (called per step)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    seen, started = 0, None
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps
            if device.type == "cuda":
                torch.cuda.synchronize()
            started, seen = time.perf_counter(), 0
        x, y = batches()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(FOOD_DEV))
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    D.tune_cpu_allocator()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model, spec, _ = models.create(args.model, 10)
    model = model.to(device).to(memory_format=memory_format)
    size, bs = spec.image_size, args.batch_size
    labels = torch.randint(0, 10, (bs,), device=device)
    rows = []

    random_x = torch.randn(bs, 3, size, size, device=device).contiguous(memory_format=memory_format)
    pure = step_rate(model, lambda: (random_x, labels), device, args.steps)
    rows.append(["pure training step, random tensors", f"{pure:.1f}", "100 %"])

    layout = D.find_layout(args.data)
    started = time.perf_counter()
    cache = D.load_cache(layout.splits["train"], D.eval_size(size, spec.crop_pct))
    decode_seconds = time.perf_counter() - started
    images = cache.images.to(device)
    generator = torch.Generator().manual_seed(0)

    def cached():
        index = torch.randint(0, len(images), (bs,), generator=generator)
        uniforms = torch.rand((bs, D.AUGMENT_DRAWS), generator=generator)
        pixels = D.augment(images[index.to(device)], size, 0.5, uniforms)
        return D.normalize(pixels, spec.mean, spec.std).contiguous(memory_format=memory_format), cache.labels[index].to(device)
    ours = step_rate(model, cached, device, args.steps)
    rows.append(["platekit: uint8 cache + batched tensor augmentation", f"{ours:.1f}", f"{100 * ours / pure:.0f} %"])

    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder
    transform = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ColorJitter(0.2, 0.2, 0.2),
                           T.ToTensor(), T.Normalize(spec.mean, spec.std)])
    loader = torch.utils.data.DataLoader(ImageFolder(str(Path(args.data) / "train"), transform), batch_size=bs,
                                         shuffle=True, num_workers=2, persistent_workers=True)
    iterator = iter(loader)

    def plain():
        nonlocal iterator
        try:
            x, y = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            x, y = next(iterator)
        return x.to(device).contiguous(memory_format=memory_format), y.to(device)
    baseline = step_rate(model, plain, device, args.steps)
    rows.append(["plain DataLoader, PIL decode + transforms per step (2 workers)", f"{baseline:.1f}",
                 f"{100 * baseline / pure:.0f} %"])

    body = table(["pipeline", "img/s", "of pure step rate"], rows)
    body += (f"\n\n{args.model} full fine-tune at {size} px, batch {bs}, {args.steps} timed steps on {device.type}; "
             f"the one-off decode of {len(cache.labels)} images took {decode_seconds:.1f} s.")
    print(body)
    if not args.no_record:
        append(f"train_throughput.py ({device.type})", body)


if __name__ == "__main__":
    main()
