"""classify.features: head-only features kept by image content, so a retrain computes only what is new."""
import re
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from classify import features, models
from classify.train import RunConfig, train
from conftest import FAST, make_image

OPTIONS = {**FAST, "views": 3, "epochs": 4, "aug": 1.0}


def _train(data, out, cache, **options):
    """Train; return (weights, (views read, views in all)) from the run's log."""
    messages = []
    train(RunConfig(data=str(data), out=str(out), feature_cache=str(cache), **{**OPTIONS, **options}),
          log=messages.append)
    found = [re.search(r"(\d+) of (\d+) view", m) for m in messages if m.startswith("feature cache")]
    counts = tuple(map(int, found[0].groups())) if found and found[0] else None
    return load_file(str(out / "model.safetensors")), counts, messages


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_retrain_reads_what_it_stored_and_trains_the_same(tiny_data, tmp_path):
    cache = tmp_path / "cache"
    # 36 train images x 3 views + 12 valid centre crops
    first, counts, _ = _train(tiny_data, tmp_path / "a", cache)
    assert counts == (0, 120) and (cache / features.FILE_NAME).stat().st_size > 0
    again, counts, _ = _train(tiny_data, tmp_path / "b", cache)
    assert counts == (120, 120)
    uncached, counts, _ = _train(tiny_data, tmp_path / "c", "none")
    assert counts is None
    assert _same(first, again) and _same(first, uncached)

    # One image added (a review accepted it): only its 3 views are computed; the model is the one an uncached run
    # trains on the new set.
    make_image(tiny_data / "train" / "red_soup" / "new.jpg", (200, 40, 30), seed=999)
    grown, counts, _ = _train(tiny_data, tmp_path / "d", cache)
    assert counts == (120, 123)
    assert _same(grown, _train(tiny_data, tmp_path / "e", "none")[0])
    assert not _same(grown, first)


def test_what_the_features_depend_on_is_part_of_the_key(tiny_data, tmp_path):
    cache = tmp_path / "cache"
    _train(tiny_data, tmp_path / "a", cache)
    # Another seed draws other augmented views: only the 36 + 12 centre crops are shared.
    _, counts, _ = _train(tiny_data, tmp_path / "b", cache, seed=1)
    assert counts == (48, 120)
    _, counts, _ = _train(tiny_data, tmp_path / "c", cache, aug=0.5)
    assert counts == (48, 120)
    # Another input size, or other backbone weights: nothing is shared.
    _, counts, _ = _train(tiny_data, tmp_path / "d", cache, image_size=96)
    assert counts == (0, 120)
    model, _, _ = models.create("efficientnet_lite0", 3)
    with torch.no_grad():
        model.backbone.conv_stem.weight.mul_(1.01)
    torch.save(model.state_dict(), tmp_path / "tweaked.pt")
    _, counts, _ = _train(tiny_data, tmp_path / "e", cache, weights=str(tmp_path / "tweaked.pt"))
    assert counts == (0, 120)


def test_renamed_files_are_found_by_content(tiny_data, tmp_path):
    cache = tmp_path / "cache"
    first, _, _ = _train(tiny_data, tmp_path / "a", cache)
    renamed = tmp_path / "renamed"
    for k, path in enumerate(sorted(tiny_data.rglob("*.jpg"))):
        target = renamed / path.relative_to(tiny_data).parent / f"img{k:03d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    weights, counts, _ = _train(renamed, tmp_path / "b", cache)
    assert counts == (120, 120) and _same(first, weights)


@pytest.mark.parametrize("damage", ["garbage", "folder is a file"])
def test_a_broken_cache_never_stops_a_run(tiny_data, tmp_path, damage):
    cache = tmp_path / "cache"
    if damage == "garbage":
        cache.mkdir()
        (cache / features.FILE_NAME).write_bytes(b"not a database" * 100)
    else:
        cache.write_text("a file where the cache folder should be")
    weights, counts, messages = _train(tiny_data, tmp_path / "a", cache)
    assert counts is None and any("not used" in m for m in messages), messages
    assert _same(weights, _train(tiny_data, tmp_path / "b", "none")[0])


def test_cache_folder_default(monkeypatch, tmp_path):
    monkeypatch.setenv("PLATEKIT_CACHE", str(tmp_path / "pc"))
    assert features.cache_folder("auto") == tmp_path / "pc"
    monkeypatch.delenv("PLATEKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert features.cache_folder("auto") == tmp_path / "xdg" / "platekit"
    assert features.cache_folder("none") is None
    assert features.cache_folder(str(tmp_path / "mine")) == tmp_path / "mine"


def _fill(store, setting, n, start=0):
    store.put(setting, {key: np.full(1280, key, np.float16) for key in range(start, start + n)})


def test_the_cache_stays_under_its_cap_dropping_the_least_recently_used(tmp_path):
    folder = tmp_path / "cache"
    store = features.FeatureStore(folder)
    for setting in ("old", "middle", "recent"):  # 300 rows of 2.5 KB each: about 0.75 MB a setting
        _fill(store, setting, 300)
    assert store.get("old", [5], (1280,))[5][0] == 5  # reading "old" makes it the most recently used
    full = store.size()
    assert store.close() == 0  # under the default cap
    store = features.FeatureStore(folder, max_bytes=int(full * 0.8))
    _fill(store, "new", 300, start=1000)
    assert store.close() == 2  # "middle", then "recent": the two used least recently; "new" is this run's own
    store = features.FeatureStore(folder)
    assert store.get("middle", [5], (1280,)) == {} and store.get("recent", [5], (1280,)) == {}
    assert len(store.get("old", list(range(300)), (1280,))) == 300
    assert len(store.get("new", list(range(1000, 1300)), (1280,))) == 300
    assert store.size() <= full * 0.8 and not store.error
    store.close()


def test_a_cache_made_before_the_cap_is_upgraded(tmp_path):
    import sqlite3
    folder = tmp_path / "cache"
    folder.mkdir()
    db = sqlite3.connect(folder / features.FILE_NAME)
    db.executescript("CREATE TABLE settings (id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE);"
                     "CREATE TABLE features (setting INTEGER NOT NULL, key INTEGER NOT NULL, data BLOB NOT NULL,"
                     " PRIMARY KEY (setting, key)) WITHOUT ROWID;"
                     "INSERT INTO settings (fingerprint) VALUES ('kept');")
    db.execute("INSERT INTO features VALUES (1, 7, ?)", (np.ones(4, np.float16).tobytes(),))
    db.commit()
    db.close()
    store = features.FeatureStore(folder)
    assert store.get("kept", [7], (4,))[7].tolist() == [1, 1, 1, 1] and not store.error
    store.close()


def test_a_run_says_what_it_evicted(tiny_data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _train(tiny_data, tmp_path / "a", cache, seed=1)
    monkeypatch.setenv("PLATEKIT_CACHE_MAX_MB", "0.01")  # below one run's own views: only the other seed's go
    _, counts, messages = _train(tiny_data, tmp_path / "b", cache, seed=2)
    assert counts[0] == 48  # the centre crops (36 train, 12 valid), the same for every seed, were read
    assert any("2 least recently used view setting(s) deleted" in m for m in messages), messages
    _, counts, _ = _train(tiny_data, tmp_path / "c", cache, seed=2)
    assert counts == (120, 120)  # this run's own settings were kept
