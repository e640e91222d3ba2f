"""classify/batching.py: one-image calls from many threads, scored in shared forward passes."""
from __future__ import annotations

import threading

import pytest

from classify import ClassifyError
from classify.batching import Batcher, SingleFlight
from conftest import make_nonfood


def test_concurrent_callers_get_what_each_gets_alone(trained_bundle, tmp_path):
    import classify

    predictor = classify.load(trained_bundle)
    batcher = Batcher(predictor, max_batch=4)  # smaller than the callers: some wait for a second pass
    photos = sorted((trained_bundle / "examples").rglob("*.jpg")) + [make_nonfood(tmp_path / "bill.png", seed=2)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    calls = [(photo, 1 + n % 3) for n, photo in enumerate(photos)] + [(broken, 5)]
    results, start = {}, threading.Barrier(len(calls))

    def call(photo, k):
        start.wait()  # all at once
        try:
            results[photo, k] = batcher.prediction(photo, k=k)
        except ClassifyError as error:
            results[photo, k] = error

    threads = [threading.Thread(target=call, args=c) for c in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == len(calls)
    assert isinstance(results[broken, 5], ClassifyError) and "unreadable image" in str(results[broken, 5])
    for photo, k in calls[:-1]:
        got, alone = results[photo, k], predictor.prediction(photo, k=k)
        assert [name for name, _ in got.top] == [name for name, _ in alone.top] and len(got.top) == k
        # a batch and a lone image take different convolution paths: float noise, sharpened by the temperature
        assert [p for _, p in got.top] == pytest.approx([p for _, p in alone.top], abs=1e-4)
        assert got.on_menu is alone.on_menu and got.menu_score == pytest.approx(alone.menu_score, abs=1e-5)


def test_single_flight_shares_a_running_call_and_keeps_nothing_after():
    flight, calls, release = SingleFlight(), [], threading.Event()
    started = threading.Event()

    def slow(value):
        def fn():
            calls.append(value)
            started.set()
            release.wait(10)
            return value * 10
        return fn

    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", flight.run("photo", slow(1))))
    first.start()
    started.wait(10)
    second = threading.Thread(target=lambda: results.setdefault("second", flight.run("photo", slow(2))))
    other = threading.Thread(target=lambda: results.setdefault("other", flight.run("other photo", lambda: 7)))
    second.start(), other.start()
    other.join(10)
    assert results == {"other": 7}  # another key does not wait
    release.set()
    first.join(10), second.join(10)
    assert results == {"first": 10, "second": 10, "other": 7} and calls == [1]  # the second rode on the first
    assert flight.run("photo", lambda: 3) == 3  # once done, the key runs afresh


def test_single_flight_gives_the_error_to_every_waiter():
    flight, release, started = SingleFlight(), threading.Event(), threading.Event()
    errors = []

    def failing():
        started.set()
        release.wait(10)
        raise ClassifyError("not an image")

    def call(fn):
        try:
            flight.run("bad", fn)
        except ClassifyError as error:
            errors.append(str(error))

    first = threading.Thread(target=call, args=(failing,))
    first.start()
    started.wait(10)
    second = threading.Thread(target=call, args=(lambda: pytest.fail("the second call ran"),))
    second.start()
    release.set()
    first.join(10), second.join(10)
    assert errors == ["not an image", "not an image"]


def test_single_flight_keeps_a_result_for_its_time_and_no_more(monkeypatch):
    import classify.batching as batching

    clock = [100.0]
    monkeypatch.setattr(batching.time, "monotonic", lambda: clock[0])
    flight, calls = SingleFlight(keep_seconds=5, max_kept=2), []

    def answer(value):
        return lambda: calls.append(value) or value
    assert flight.run("a", answer(1)) == 1
    clock[0] += 4
    assert flight.run("a", answer(2)) == 1 and calls == [1]  # within its time: kept
    clock[0] += 2
    assert flight.run("a", answer(3)) == 3  # past it: run again
    flight.run("b", answer(4)), flight.run("c", answer(5))  # over max_kept: the oldest ("a") goes
    assert flight.run("a", answer(6)) == 6 and calls == [1, 3, 4, 5, 6]
    with pytest.raises(ClassifyError):
        flight.run("bad", lambda: (_ for _ in ()).throw(ClassifyError("not an image")))
    assert flight.run("bad", answer(7)) == 7  # an error is not kept
