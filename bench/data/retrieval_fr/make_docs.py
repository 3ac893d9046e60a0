"""Rebuilds docs/ from the Debian packages named in SOURCES.md (run once, by hand, as root on a
Debian 12 machine after `apt-get install debian-handbook` and `apt-get download
libreoffice-help-fr debian-faq-fr` + `dpkg-deb -x`): the chosen pages' own text as Markdown,
navigation and index anchors removed, inline markup dropped so that answers are plain text."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

from lxml import html

HANDBOOK = Path("/usr/share/doc/debian-handbook/html/fr-FR")
HANDBOOK_PAGES = [
    "sect.user-space",
    "sect.creating-accounts",
    "sect.kernel-role-and-tasks",
    "sect.syslog",
    "sect.hotplug",
    "sect.hostname-name-service",
    "short-remedial-course",
    "network-infrastructure",
    "security",
    "sect.follow-debian-news",
    "sect.network-diagnosis-tools",
    "basic-configuration",
    "sect.quotas",
    "sect.release-lifecycle",
    "sect.foundation-documents",
    "sect.backup",
    "sect.ldap-directory",
    "sect.network-config",
]
LIBREOFFICE_PAGES = [
    "swriter/guide/pagenumbers",
    "swriter/guide/pageorientation",
    "swriter/guide/footnote_usage",
    "swriter/guide/table_insert",
    "swriter/guide/using_hyphen",
    "swriter/guide/form_letters_main",
    "swriter/guide/indices_toc",
    "scalc/guide/cell_protect",
    "scalc/guide/table_cellmerge",
    "scalc/guide/csv_files",
    "scalc/guide/cellstyle_conditional",
    "scalc/guide/relativ_absolut_ref",
    "scalc/guide/autofilter",
    "scalc/guide/rename_table",
    "simpress/guide/presenter_console",
    "simpress/guide/rehearse_timings",
    "shared/guide/digital_signatures",
    "shared/guide/redaction",
]
FAQ_PAGES = ["basic-defs", "software", "pkgtools", "uptodate"]

HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
BLOCKS = {"p", "div", "li", "dt", "dd", "pre", "table", "tr", "ul", "ol", "dl", "blockquote"}
BLOCKS |= {"thead", "tbody", "tfoot", "caption"}
BLOCKS |= set(HEADINGS) | {"section", "article", "header", "footer", "aside", "nav", "figure"}
DROP_CLASSES = {"docnav", "toc", "indexterm", "related", "navheader", "navfooter", "footnotes"}
SPACES = re.compile(r"\s+")


def _classes(node: html.HtmlElement) -> set[str]:
    return set((node.get("class") or "").split())


def _dropped(node: html.HtmlElement) -> bool:
    return (
        node.tag in ("script", "style", "meta", "img", "noscript", "button", "input")
        or bool(_classes(node) & DROP_CLASSES)
        or node.get("id") in ("banner", "title", "TopLeftHeader")
    )


def _inline(node: html.HtmlElement) -> str:
    return "" if _dropped(node) else node.text_content()


def _clean(text: str) -> str:
    return SPACES.sub(" ", text).strip()


def _blocks(node: html.HtmlElement, bullet: str = "") -> Iterator[str]:
    """Markdown blocks for a node: headings, paragraphs, list items, code, table rows."""
    if _dropped(node):
        return
    if node.tag in HEADINGS:
        yield "#" * HEADINGS[node.tag] + " " + _clean(node.text_content())
        return
    if node.tag == "pre":
        yield "```\n" + node.text_content().strip("\n") + "\n```"
        return
    if node.tag == "tr":
        yield " | ".join(_clean(cell.text_content()) for cell in node if cell.tag in ("td", "th"))
        return
    buffer, first = [node.text or ""], True
    for child in node:
        if not isinstance(child.tag, str):
            buffer.append(child.tail or "")
            continue
        if child.tag in BLOCKS:
            text = _clean("".join(buffer))
            if text:
                yield (bullet if first else "") + text
                first = False
            buffer = []
            prefix = "- " if child.tag == "li" else ""
            for block in _blocks(child, prefix):
                yield (bullet if first else "") + block
                first = False
        else:
            buffer.append(_inline(child))
        buffer.append(child.tail or "")
    text = _clean("".join(buffer))
    if text:
        yield (bullet if first else "") + text


def _markdown(root: html.HtmlElement) -> str:
    return "\n\n".join(block for block in _blocks(root) if block.strip()) + "\n"


def _handbook(name: str) -> str:
    page = html.parse(str(HANDBOOK / f"{name}.html")).getroot()
    body = page.find("body")
    assert body is not None
    return _markdown(body)


def _libreoffice(root: Path, name: str) -> str:
    page = html.parse(str(root / f"{name}.html")).getroot()
    return _markdown(page.xpath('//div[@id="DisplayArea"]')[0])


def _faq(root: Path, name: str) -> str:
    page = html.parse(str(root / f"{name}.fr.html")).getroot()
    body = page.find("body")
    assert body is not None
    return _markdown(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--libreoffice", type=Path, required=True, help="…/help/fr/text")
    parser.add_argument("--faq", type=Path, required=True, help="…/doc/debian/FAQ/fr")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in HANDBOOK_PAGES:
        slug = name.removeprefix("sect.")
        (args.out / f"handbook-{slug}.md").write_text(_handbook(name))
    for name in LIBREOFFICE_PAGES:
        module, _, page = name.split("/")
        (args.out / f"libreoffice-{module}-{page}.md").write_text(
            _libreoffice(args.libreoffice, name)
        )
    for name in FAQ_PAGES:
        (args.out / f"faq-{name}.md").write_text(_faq(args.faq, name))


if __name__ == "__main__":
    main()
