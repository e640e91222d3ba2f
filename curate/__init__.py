"""curate: scrape, import, deduplicate, review and export food images into an ImageFolder set."""


class CurateError(Exception):
    """The one user-facing error of the curate package: its message says what to do."""


__all__ = ["CurateError"]
