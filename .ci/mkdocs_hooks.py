"""mkdocs hooks: links from a docs page to a file outside ``docs/`` go to the repository.

The pages in ``docs/`` are read in two places: on GitHub, where a relative link such as
``../README.md#the-two-commands`` or ``../../examples/batch.py`` opens the file beside them,
and on the built site, which holds only ``docs/``. There mkdocs would report such a link as
not found (a failure under ``--strict``), and a reader would have nowhere to go. So, while the
site is built, each relative link that leaves ``docs/`` is rewritten to the file in the
repository (``repo_url``, branch ``main``); links within ``docs/`` are left to mkdocs, which
checks them.

No import of mkdocs: the hooks are plain functions that mkdocs calls by name, and this module
stays type-checked in an environment without the ``docs`` dependency group.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any, Final

BRANCH: Final = "main"

# An inline link or image whose target is relative and climbs (``../``): ``](../x.md#y)``.
_OUTBOUND: Final = re.compile(r"(?P<open>\]\()(?P<target>\.\./[^)\s]*)(?P<close>[)\s])")


def outside_link(target: str, *, page_path: str, repo_url: str) -> str | None:
    """The repository address of ``target``, a link on the page at ``page_path`` (relative
    to ``docs/``), when it leads outside ``docs/``; ``None`` when it stays inside, or leaves
    the repository too.

    On ``guides/testing.md``, ``../../examples/batch.py`` becomes
    ``{repo_url}/blob/main/examples/batch.py``; ``../license.md`` stays as it is.
    """
    path, hash_, anchor = target.partition("#")
    joined = posixpath.normpath(posixpath.join("docs", posixpath.dirname(page_path), path))
    if joined == "docs" or joined.startswith(("docs/", "../")) or joined == "..":
        return None
    fragment = f"#{anchor}" if hash_ else ""
    if joined == ".":
        return f"{repo_url.rstrip('/')}{fragment}"
    kind = "tree" if path.endswith("/") else "blob"
    return f"{repo_url.rstrip('/')}/{kind}/{BRANCH}/{joined}{fragment}"


def on_page_markdown(markdown: str, /, *, page: Any, config: Any, files: Any) -> str:
    """Rewrite the page's links that leave ``docs/`` (mkdocs calls this for every page)."""
    repo_url = config["repo_url"]
    if not repo_url:
        return markdown  # mkdocs then reports them, as it would without this hook
    page_path = page.file.src_uri

    def rewrite(match: re.Match[str]) -> str:
        url = outside_link(match["target"], page_path=page_path, repo_url=repo_url)
        if url is None:
            return match[0]
        return f"{match['open']}{url}{match['close']}"

    return _OUTBOUND.sub(rewrite, markdown)
