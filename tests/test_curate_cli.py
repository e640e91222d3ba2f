"""curate's command line (curate/__main__.py): every default is the library's own, and a refused engine is refused
before anything is opened. In-process: no subprocess per case."""
import inspect
from dataclasses import fields

import pytest

from curate.__main__ import build_parser, main


def parse(*argv):
    return vars(build_parser().parse_args(["--workspace", "ws", *argv]))


def test_defaults_come_from_the_library():
    from curate.dedup import dedup
    from curate.export import ExportConfig
    from curate.importer import import_images
    from curate.scrape import ScrapeConfig
    from curate.suspects import SuspectsConfig

    export = parse("export", "out")
    flags = {"split": "split", "exclude_flags": "exclude_flag", "threshold_bits": "threshold_bits"}
    for field in fields(ExportConfig):
        name = flags.get(field.name, field.name)
        if name in export and export[name] is not None:
            value = tuple(export[name]) if isinstance(field.default, tuple) else export[name]
            assert value == field.default, field.name
    scrape = parse("scrape", "Pho")
    config = ScrapeConfig()
    assert (scrape["engine"], scrape["per_class"], scrape["query"], scrape["min_size"], scrape["threads"],
            scrape["timeout"]) == (config.engine, config.per_class, config.query, config.min_size_px,
                                   config.threads, config.timeout_s)
    defaults = {k: p.default for k, p in inspect.signature(dedup).parameters.items()}
    options = parse("dedup")
    assert (options["hash"], options["threshold"], options["scope"], options["method"], options["similarity"],
            options["model"]) == (defaults["method"], defaults["threshold_bits"], defaults["scope"], defaults["by"],
                                  defaults["similarity"], defaults["model"])
    assert parse("import", "src")["min_size"] == inspect.signature(import_images).parameters["min_size_px"].default
    assert parse("suspects")["model"] == SuspectsConfig().model


def test_scrape_offers_only_working_engines_and_says_why_not(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["scrape", "--help"])
    assert stopped.value.code == 0
    usage = capsys.readouterr().out
    assert "{bing,flickr,greedy,urls}" in usage and "google" not in usage
    for engine, issue in (("google", "#107"), ("baidu", "#103"), ("altavista", "bing, flickr, greedy, urls")):
        with pytest.raises(SystemExit) as stopped:
            main(["--workspace", str(tmp_path / "ws"), "scrape", "Pho", "--engine", engine])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and len(err.strip().splitlines()) == 1 and issue in err, err
    assert not (tmp_path / "ws").exists()  # refused before the workspace was created
