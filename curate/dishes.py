"""Other dishes to scrape for `classify train --not-on-menu`, when the user names none: `scrape --other-dishes N
--menu PATH` takes N common dishes that are not on the menu.

Why: photos of other dishes are what teaches the on-menu score to reject dishes it never saw, and the more dishes the
better (bench/ood_dishes.py: an unseen dish rejected 27.8 % with none supplied, 34.5 / 38.7 / 41.8 / 44.4 % with 1 to
4), but a user who lists a menu should not have to think up a second list."""
from __future__ import annotations

import random
import re
import unicodedata
from pathlib import Path

from classify.options import read_text
from curate import CurateError
from curate.workspace import MANIFEST, Workspace, resolved

# Food-101's 101 classes (Bossard et al. 2014): a list of well-known dishes from many cuisines, each a photo-able
# plate, which search engines answer well.
COMMON_DISHES = (
    "apple pie", "baby back ribs", "baklava", "beef carpaccio", "beef tartare", "beet salad", "beignets", "bibimbap",
    "bread pudding", "breakfast burrito", "bruschetta", "caesar salad", "cannoli", "caprese salad", "carrot cake",
    "ceviche", "cheesecake", "cheese plate", "chicken curry", "chicken quesadilla", "chicken wings", "chocolate cake",
    "chocolate mousse", "churros", "clam chowder", "club sandwich", "crab cakes", "creme brulee", "croque madame",
    "cup cakes", "deviled eggs", "donuts", "dumplings", "edamame", "eggs benedict", "escargots", "falafel",
    "filet mignon", "fish and chips", "foie gras", "french fries", "french onion soup", "french toast",
    "fried calamari", "fried rice", "frozen yogurt", "garlic bread", "gnocchi", "greek salad",
    "grilled cheese sandwich", "grilled salmon", "guacamole", "gyoza", "hamburger", "hot and sour soup", "hot dog",
    "huevos rancheros", "hummus", "ice cream", "lasagna", "lobster bisque", "lobster roll sandwich",
    "macaroni and cheese", "macarons", "miso soup", "mussels", "nachos", "omelette", "onion rings", "oysters",
    "pad thai", "paella", "pancakes", "panna cotta", "peking duck", "pho", "pizza", "pork chop", "poutine",
    "prime rib", "pulled pork sandwich", "ramen", "ravioli", "red velvet cake", "risotto", "samosa", "sashimi",
    "scallops", "seaweed salad", "shrimp and grits", "spaghetti bolognese", "spaghetti carbonara", "spring rolls",
    "steak", "strawberry shortcake", "sushi", "tacos", "takoyaki", "tiramisu", "tuna tartare", "waffles",
)
ORDER_SEED = 0  # one fixed order, spread over the list: the same N dishes every run, so a re-run tops them up


def words(name: str) -> frozenset[str]:
    """A dish name's words, lower case, accents dropped ("Crème brûlée" is "creme brulee"), a plural's final s dropped
    ("Tacos" and "taco" are the same dish); underscores and punctuation split words."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", name.casefold()) if not unicodedata.combining(c))
    return frozenset(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in re.findall(r"[^\W_]+", plain))


def too_close(dish: str, menu: list[str]) -> bool:
    """True when `dish` could be on the menu: its words are all in a menu name's, or a menu name's all in its
    ("pizza" against "margherita pizza", "fried rice" against "rice")."""
    mine = words(dish)
    return any(mine <= words(name) or words(name) <= mine for name in menu if words(name))


def menu_names(path: str | Path) -> list[str]:
    """The menu's categories: from a workspace folder (its manifest) or a text file, one per line (# comments)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        with Workspace(path, create=False, writes=False) as ws:
            return list(ws.categories())
    if path.is_dir():
        raise CurateError(f"--menu {path}: a folder without a workspace manifest; give the menu's workspace or a file "
                          f"of its categories")
    lines = read_text(path, "--menu", CurateError).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def other_dishes(menu: list[str], count: int) -> tuple[list[str], list[str]]:
    """(`count` dishes of COMMON_DISHES not on `menu`, in the fixed order; the dishes left out as too close to it)."""
    if not menu:
        raise CurateError("--menu names no categories: without the menu every dish could be one of yours")
    order = list(COMMON_DISHES)
    random.Random(ORDER_SEED).shuffle(order)
    left_out = [dish for dish in order if too_close(dish, menu)]
    chosen = [dish for dish in order if dish not in left_out]
    if count > len(chosen):
        raise CurateError(f"--other-dishes {count}: platekit knows {len(chosen)} dishes not on this menu; ask for at "
                          f"most that, or name more with CATEGORY arguments in a workspace of their own")
    return chosen[:count], sorted(left_out)


def dishes_for(workspace: str | Path, menu: str | Path, count: int) -> tuple[list[str], list[str]]:
    """`other_dishes` for the menu at `menu`, to be scraped into `workspace`, which must not be the menu's own (the
    dishes would become classes of the menu)."""
    if resolved(workspace) == resolved(menu):
        raise CurateError(f"--other-dishes goes into a workspace of its own, not the menu's ({menu}): pass another "
                          f"--workspace")
    return other_dishes(menu_names(menu), count)
