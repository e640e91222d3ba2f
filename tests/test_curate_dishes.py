"""`scrape --other-dishes N --menu PATH`: common dishes that are not on the menu, for classify train --not-on-menu."""
import pytest

from badinput import tree_digest
from curate import CurateError
from curate.dishes import COMMON_DISHES, dishes_for, menu_names, other_dishes, too_close
from curate.workspace import Workspace
from test_curate_importer import run_cli
from test_curate_scrape import server  # noqa: F401  the local search engine and image host


def test_other_dishes_leave_out_the_menu_and_names_close_to_it():
    menu = ["Pizza Margherita", "tacos", "Beet_Salad", "pho", "Crème Brûlée", "ラーメン"]
    chosen, left_out = other_dishes(menu, 20)
    assert len(chosen) == len(set(chosen)) == 20 and set(chosen) <= set(COMMON_DISHES)
    assert {"pizza", "tacos", "beet salad", "pho", "creme brulee"} <= set(left_out)  # "pizza": in "Pizza Margherita"
    assert not set(chosen) & set(left_out) and not any(too_close(dish, menu) for dish in chosen)
    assert "greek salad" not in left_out  # shares a word with beet salad, but is another dish
    assert other_dishes(menu, 20) == (chosen, left_out)  # one fixed order: a re-run tops the same dishes up
    assert other_dishes(menu, 5)[0] == chosen[:5]
    assert chosen[:3] != sorted(COMMON_DISHES)[:3]  # spread over the list, not its first letters
    with pytest.raises(CurateError, match=f"knows {len(COMMON_DISHES) - len(left_out)} dishes"):
        other_dishes(menu, len(COMMON_DISHES))
    with pytest.raises(CurateError, match="names no categories"):
        other_dishes([], 3)


def test_the_menu_is_read_from_its_workspace_or_a_file(tmp_path):
    with Workspace(tmp_path / "menu") as ws:
        ws.ensure_category("Ramen")
        ws.ensure_category("gyoza")
    before = tree_digest(tmp_path / "menu")
    assert sorted(menu_names(tmp_path / "menu")) == ["Ramen", "gyoza"]
    assert tree_digest(tmp_path / "menu") == before  # the menu's workspace is only read
    listed = tmp_path / "menu.txt"
    listed.write_text("# my menu\nRamen\n\ngyoza\n")
    assert menu_names(listed) == ["Ramen", "gyoza"]
    assert not {"ramen", "gyoza"} & set(dishes_for(tmp_path / "other", listed, 30)[0])
    (tmp_path / "plain").mkdir()
    for wrong, words in ((tmp_path / "plain", "without a workspace manifest"), (tmp_path / "missing.txt", "--menu"),
                         (tmp_path / "menu", "a workspace of its own")):
        with pytest.raises(CurateError, match=words):
            dishes_for(tmp_path / "menu", wrong, 3)


def test_scrape_other_dishes_fills_a_workspace_of_their_own(tmp_path, server):  # noqa: F811
    base, _ = server
    menu = tmp_path / "menu.txt"
    menu.write_text("pizza\nsushi\n")
    chosen, _ = other_dishes(["pizza", "sushi"], 2)
    urls = tmp_path / "urls.tsv"
    urls.write_text(f"{chosen[0]}\t{base}/img/good1.jpg\n{chosen[1]}\t{base}/img/good2.jpg\n")
    other = tmp_path / "other"
    done = run_cli("--workspace", other, "scrape", "--other-dishes", "2", "--menu", menu, "--engine", "urls",
                   "--urls", urls, "--per-class", "1")
    assert done.returncode == 0, done.stderr
    assert f"other dishes: {chosen[0]}, {chosen[1]} (left out as on the menu or close to it: pizza, sushi)" in done.stdout
    with Workspace(other) as ws:
        assert sorted(ws.categories()) == sorted(chosen) and ws.count() == 2


@pytest.mark.parametrize("extra, words", [
    ((), "--other-dishes needs --menu"),
    (("ramen",), "not both"),
    (("--menu", "{menu}"), "a workspace of its own"),
])
def test_scrape_other_dishes_refuses_what_cannot_work_and_makes_no_workspace(tmp_path, extra, words):
    with Workspace(tmp_path / "menu") as ws:
        ws.ensure_category("Ramen")
    workspace = tmp_path / ("menu" if "{menu}" in extra else "new")
    args = [arg.replace("{menu}", str(tmp_path / "menu")) for arg in extra]
    done = run_cli("--workspace", workspace, "scrape", "--other-dishes", "3", *args)
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()


def test_scrape_with_no_categories_makes_no_workspace(tmp_path):
    done = run_cli("--workspace", tmp_path / "new", "scrape")
    assert done.returncode == 2 and "no categories given" in done.stderr
    assert not (tmp_path / "new").exists()
    done = run_cli("--workspace", tmp_path / "new", "scrape", "ramen", "--menu", "menu.txt")
    assert done.returncode == 2 and "--menu goes with --other-dishes" in done.stderr
