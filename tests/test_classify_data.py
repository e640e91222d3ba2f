"""classify.data: split discovery, decoding, the uint8 cache and tensor augmentation."""
import pytest
import torch

from classify import ClassifyError
from classify import data as D
from conftest import COLOURS, make_image, make_imagefolder


def test_layout_reads_train_valid_test(tmp_path):
    root = make_imagefolder(tmp_path / "d", per_class=(5, 2, 1))
    layout = D.find_layout(root)
    assert layout.classes == tuple(sorted(COLOURS))
    assert [len(layout.splits[s]) for s in ("train", "valid", "test")] == [15, 6, 3]
    assert not layout.split_made


def test_flat_folder_is_split_stratified_and_seeded(tmp_path):
    for name, colour in COLOURS.items():
        for i in range(10):
            make_image(tmp_path / "flat" / name / f"{i}.png", colour, i, fmt="PNG")
    a = D.find_layout(tmp_path / "flat", seed=1, valid_fraction=0.2)
    b = D.find_layout(tmp_path / "flat", seed=1, valid_fraction=0.2)
    c = D.find_layout(tmp_path / "flat", seed=2, valid_fraction=0.2)
    assert a.split_made and a.splits == b.splits and a.splits != c.splits
    per_class = [sum(1 for s in a.splits["valid"] if s.label == k) for k in range(3)]
    assert per_class == [2, 2, 2]
    assert not {s.path for s in a.splits["valid"]} & {s.path for s in a.splits["train"]}
    # Renamed files land in the same split: the draw is over contents.
    for path in sorted((tmp_path / "flat").rglob("*.png")):
        target = tmp_path / "renamed" / path.parent.name / f"x{9 - int(path.stem)}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    renamed = D.find_layout(tmp_path / "renamed", seed=1, valid_fraction=0.2)
    content = lambda layout: sorted((s.label, s.path.read_bytes()) for s in layout.splits["valid"])  # noqa: E731
    assert content(renamed) == content(a)


@pytest.mark.parametrize("problem, message", [
    ("one_class", "at least 2"),
    ("empty_class", "has no images"),
    ("missing_valid", "no valid/ split"),
    ("missing_folder", "not found"),
])
def test_layout_errors(tmp_path, problem, message):
    root = tmp_path / "d"
    if problem == "one_class":
        make_image(root / "train" / "only" / "a.jpg", (1, 2, 3), 0)
        make_image(root / "valid" / "only" / "a.jpg", (1, 2, 3), 1)
    elif problem == "empty_class":
        make_imagefolder(root, per_class=(2, 1, 0))
        (root / "train" / "empty_pho").mkdir()
    elif problem == "missing_valid":
        make_imagefolder(root, per_class=(2, 0, 0))
    with pytest.raises(ClassifyError, match=message):
        D.find_layout(root)


def test_decode_resizes_short_side_and_centres(tmp_path):
    path = make_image(tmp_path / "wide.png", (10, 200, 30), 0, size=(200, 100), fmt="PNG")
    array = D.decode(path, 50)
    assert array.shape == (50, 50, 3) and array.dtype.name == "uint8"


@pytest.mark.parametrize("content", [b"", b"<html>not an image</html>", None])
def test_decode_rejects_non_images(tmp_path, content):
    path = tmp_path / "bad.jpg"
    if content is None:  # a real JPEG cut in half
        good = make_image(tmp_path / "good.jpg", (100, 100, 100), 0, size=(300, 300))
        content = good.read_bytes()[: good.stat().st_size // 3]
    path.write_bytes(content)
    with pytest.raises(ClassifyError, match="unreadable"):
        D.decode(path, 32)


def test_cache_skips_and_lists_corrupt_files(tmp_path):
    root = make_imagefolder(tmp_path / "d", per_class=(3, 1, 0))
    broken = root / "train" / "red_soup" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 garbage")
    layout = D.find_layout(root)
    cache = D.load_cache(layout.splits["train"], 40)
    assert cache.images.shape == (9, 3, 40, 40)
    assert [p for p, _ in cache.skipped] == [broken]
    assert D.class_counts(cache.labels, 3) == [3, 3, 3]


def test_augment_shapes_range_and_determinism():
    batch = torch.randint(0, 256, (6, 3, 48, 48), dtype=torch.uint8)
    draws = lambda seed: torch.rand((6, D.AUGMENT_DRAWS), generator=torch.Generator().manual_seed(seed))  # noqa: E731
    a = D.augment(batch, 40, 1.0, draws(3))
    b = D.augment(batch, 40, 1.0, draws(3))
    assert a.shape == (6, 3, 40, 40) and a.min() >= 0 and a.max() <= 255
    assert torch.equal(a, b)
    assert not torch.equal(a, D.augment(batch, 40, 1.0, draws(4)))
    centre = D.augment(batch, 40, 0.0, draws(5))
    assert torch.equal(centre, batch[..., 4:44, 4:44].float())


def test_augment_flip_only_mirrors():
    # With a full-image crop (area 1, ratio 1) and no jitter, a flip is an exact mirror of the image.
    batch = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8).to(torch.uint8)
    keys = torch.arange(8, dtype=torch.long)
    outs = {tuple(D.augment(batch[:1], 8, 1e-9, D.keyed_uniforms(keys[s:s + 1], D.AUGMENT_DRAWS, 0))[0, 0, 0].tolist())
            for s in range(8)}
    row = batch[0, 0, 0].float()
    assert outs <= {tuple(row.tolist()), tuple(row.flip(0).tolist())} and len(outs) == 2


def test_keyed_uniforms_follow_the_image_not_its_position():
    keys = torch.tensor([11, -7, 2**62, 5], dtype=torch.long)
    u = D.keyed_uniforms(keys, D.AUGMENT_DRAWS, 0, 1, 3)
    assert u.shape == (4, D.AUGMENT_DRAWS) and u.min() >= 0 and u.max() < 1
    # The same image gets the same numbers among other neighbours, in another place.
    shuffled = D.keyed_uniforms(keys[[3, 0, 2]], D.AUGMENT_DRAWS, 0, 1, 3)
    assert torch.equal(shuffled, u[[3, 0, 2]])
    # Another seed, purpose or epoch draws anew; values spread over [0, 1).
    assert not torch.equal(u, D.keyed_uniforms(keys, D.AUGMENT_DRAWS, 1, 1, 3))
    assert not torch.equal(u, D.keyed_uniforms(keys, D.AUGMENT_DRAWS, 0, 1, 4))
    many = D.keyed_uniforms(torch.arange(20_000, dtype=torch.long), 2, 0)
    assert abs(many.mean().item() - 0.5) < 0.01 and abs(torch.corrcoef(many.T)[0, 1].item()) < 0.03
    # Shared images keep their relative order when others join.
    order = [keys[i].item() for i in D.keyed_order(keys, 0, 2, 0)]
    more = torch.cat([keys, torch.tensor([99, 1234567], dtype=torch.long)])
    assert [k for k in (more[i].item() for i in D.keyed_order(more, 0, 2, 0)) if k in order] == order


def test_cache_keys_are_content_hashes(tmp_path):
    root = make_imagefolder(tmp_path / "d", per_class=(2, 1, 0))
    first = sorted((root / "train").rglob("*.jpg"))[0]
    twin = first.with_name("zz_copy.jpg")
    twin.write_bytes(first.read_bytes())
    cache = D.load_cache(D.find_layout(root).splits["train"], 32)
    by_path = dict(zip(cache.paths, cache.keys.tolist()))
    assert by_path[first] == by_path[twin]
    assert len(set(by_path.values())) == len(by_path) - 1
