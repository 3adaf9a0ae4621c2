"""A CDA R2 document as an HTML fragment for the portal (which wraps it in its French page):
a summary of the header (title, patient, authors, date), then, for a level 3 document, each
section of the ``structuredBody`` with its title and its narrative block (``section/text``)
converted element by element; for a level 1 document, a sentence saying what the content is
(the portal shows a PDF with its own viewer).

Safe by construction: only the narrative elements of CDA R2 (paragraph, list/item,
table/caption/thead/tbody/tfoot/tr/th/td, content with ``styleCode`` bold, italics or
underline, sub, sup, br, footnote, caption) become HTML elements, with no attribute of the
document's but ``colspan``/``rowspan`` numbers; every text is escaped; ``linkHtml`` becomes
its plain text (no ``href``), ``renderMultiMedia`` a placeholder, anything else its text.
"""

from __future__ import annotations

import html
from datetime import date, datetime
from typing import Any

from enrs.documents import cda

_H = f"{{{cda.HL7_NS}}}"
_MAX_DEPTH = 64  # deeper narrative markup is shown as its text
_GENDERS = {"M": "masculin", "F": "féminin", "U": "inconnu"}
_INS_LABELS = {
    cda.INS_NIR_OID: "INS-NIR",
    cda.INS_NIA_OID: "INS-NIA",
    cda.INS_NIR_TEST_OID: "INS-NIR de test",
    cda.INS_NIA_TEST_OID: "INS-NIA de test",
}
# styleCode tokens (case-insensitive; "BoldItalics" is seen in real documents) → HTML tags
_STYLES = {
    "bold": ("strong",),
    "italics": ("em",),
    "emphasis": ("em",),
    "underline": ("u",),
    "bolditalics": ("strong", "em"),
}
_SIMPLE = {"sub", "sup", "thead", "tbody", "tfoot", "tr", "td", "th"}
_STRUCTURE = frozenset({"table", "thead", "tbody", "tfoot", "tr", "list"})  # no text, no style
_BLOCKS = frozenset({"paragraph", "list", "table"})


def render_html(data: bytes) -> str:
    """The CDA document ``data`` as an HTML fragment (an ``<article class="cda">``).

    Raises :class:`enrs.documents.cda.CdaError` when the document cannot be read."""
    document, root = cda.parse_cda_tree(data)
    out: list[str] = ['<article class="cda">']
    _header(out, document)
    if document.body_kind == "structuredBody":
        body = root.find(f"{_H}component/{_H}structuredBody")
        for section in body.findall(f"{_H}component/{_H}section"):
            _section(out, section, 2)
    else:
        _non_xml_body(out, document)
    out.append("</article>")
    return "".join(out)


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _plain(el: Any) -> str | None:
    if el is None:
        return None
    text = " ".join("".join(el.itertext()).split())
    return text or None


# --- header -------------------------------------------------------------------------------


def _header(out: list[str], doc: cda.CdaDocument) -> None:
    title = doc.title or doc.type_code.display or "Document"
    out.append(f'<header class="cda-header"><h1>{_e(title)}</h1><dl>')
    kind = doc.type_code.display or doc.type_code.code
    out.append(f"<dt>Type</dt><dd>{_e(kind)}</dd>")
    out.append(f"<dt>Patient</dt><dd>{_e(_patient(doc))}</dd>")
    label = "Auteur" if len(doc.authors) == 1 else "Auteurs"
    out.append(f"<dt>{label}</dt>")
    out.extend(f"<dd>{_e(_author(a))}</dd>" for a in doc.authors)
    out.append(f"<dt>Date</dt><dd>{_e(_when(doc.effective_time))}</dd>")
    if doc.confidentiality.code != "N":
        level = doc.confidentiality.display or doc.confidentiality.code
        out.append(f"<dt>Confidentialité</dt><dd>{_e(level)}</dd>")
    out.append("</dl></header>")


def _patient(doc: cda.CdaDocument) -> str:
    name = " ".join(p for p in (doc.patient_family, *doc.patient_given) if p) or "(sans nom)"
    parts = [name]
    if doc.patient_birth_date is not None:
        parts.append(f"date de naissance {_day(doc.patient_birth_date)}")
    if doc.patient_gender in _GENDERS:
        parts.append(f"sexe {_GENDERS[doc.patient_gender]}")
    ins = doc.ins
    if ins is not None and ins.extension:
        parts.append(f"{_INS_LABELS[ins.root]} {ins.extension}")
    return ", ".join(parts)


def _author(author: cda.CdaAuthor) -> str:
    name = " ".join(p for p in (author.family, author.given) if p)
    parts = [name or "(auteur sans nom)"]
    if author.specialty is not None:
        parts.append(author.specialty.display or author.specialty.code)
    if author.organization_name:
        parts.append(author.organization_name)
    return ", ".join(parts)


def _day(value: date) -> str:
    return value.strftime("%d/%m/%Y")


def _when(value: datetime) -> str:
    text = f"{_day(value)} {value:%H:%M}"
    offset = value.utcoffset()
    if offset is not None:
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        text += f" (UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d})"
    return text


def _non_xml_body(out: list[str], doc: cda.CdaDocument) -> None:
    media = doc.body_media_type or "text/plain"
    if doc.body is None:
        out.append('<p class="cda-body">Le contenu de ce document est hors du document CDA ')
        out.append(f"({_e(media)}) : il n'est pas affiché ici.</p>")
    elif media == "application/pdf":
        out.append(
            '<p class="cda-body cda-body-pdf">Le contenu de ce document est un PDF '
            f"({_size(len(doc.body))}) : il s'affiche dans la visionneuse du portail.</p>"
        )
    elif media == "text/plain":
        text = doc.body.decode("utf-8", errors="replace")
        out.append(f'<pre class="cda-body cda-body-text">{_e(text)}</pre>')
    else:
        out.append(
            f'<p class="cda-body">Le contenu de ce document est de type {_e(media)} '
            f"({_size(len(doc.body))}) : il n'est pas affiché ici.</p>"
        )


def _size(count: int) -> str:
    return f"{count:,} octets".replace(",", "\u202f")


# --- structured body ----------------------------------------------------------------------


def _section(out: list[str], section: Any, level: int) -> None:
    out.append('<section class="cda-section">')
    title = _plain(section.find(f"{_H}title"))
    if title is None:
        code = section.find(f"{_H}code")
        title = (code.get("displayName") or None) if code is not None else None
    if title is not None:
        tag = f"h{min(level, 6)}"
        out.append(f"<{tag}>{_e(title)}</{tag}>")
    text = section.find(f"{_H}text")
    if text is not None and (len(text) or _plain(text)):
        out.append('<div class="cda-narrative">')
        _children(out, text, 0)
        out.append("</div>")
    for sub in section.findall(f"{_H}component/{_H}section"):
        _section(out, sub, level + 1)
    out.append("</section>")


def _children(out: list[str], el: Any, depth: int) -> None:
    """The content of a narrative element: its text, its children, their tails."""
    keep_text = _local(el) not in _STRUCTURE
    if el.text and keep_text:
        out.append(_e(el.text))
    for child in el:
        if isinstance(child.tag, str):
            _element(out, child, depth + 1)
        if child.tail and keep_text:
            out.append(_e(child.tail))


def _local(el: Any) -> str | None:
    """The local name of an element of the HL7 namespace; None for any other node."""
    if not isinstance(el.tag, str) or not el.tag.startswith(_H):
        return None
    return str(el.tag[len(_H) :])


def _element(out: list[str], el: Any, depth: int) -> None:
    name = _local(el)
    if depth > _MAX_DEPTH:
        out.append(_e("".join(el.itertext())))
        return
    if name == "br":
        out.append("<br>")
        return
    if name == "renderMultiMedia":
        caption = _plain(el.find(f"{_H}caption"))
        label = f"[image non affichée : {caption}]" if caption else "[image non affichée]"
        out.append(f'<span class="cda-media">{_e(label)}</span>')
        return
    if name in ("colgroup", "col", "footnoteRef"):
        return  # widths and references: nothing to read
    if name == "linkHtml" or name is None:
        # a link's text without its target; an unknown element's text without its markup
        _children(out, el, depth)
        return
    if name in ("table", "list"):
        _table_or_list(out, el, name, depth)
        return
    tag, attributes = _tag(el, name)
    styles = _style_tags(el) if name not in _STRUCTURE else []
    out.append(f"<{tag}{attributes}>")
    out.extend(f"<{s}>" for s in styles)
    _children(out, el, depth)
    out.extend(f"</{s}>" for s in reversed(styles))
    out.append(f"</{tag}> " if name == "caption" else f"</{tag}>")


def _table_or_list(out: list[str], el: Any, name: str, depth: int) -> None:
    """A table (its caption as ``<caption>``) or a list (its caption before it)."""
    caption = el.find(f"{_H}caption")
    if name == "table":
        out.append('<table class="cda-table">')
        if caption is not None:
            out.append("<caption>")
            _children(out, caption, depth + 1)
            out.append("</caption>")
        end = "</table>"
    else:
        if caption is not None:
            out.append('<p class="cda-caption"><strong>')
            _children(out, caption, depth + 1)
            out.append("</strong></p>")
        tag = "ol" if (el.get("listType") or "").strip() == "ordered" else "ul"
        out.append(f"<{tag}>")
        end = f"</{tag}>"
    for child in el:
        if isinstance(child.tag, str) and _local(child) != "caption":
            _element(out, child, depth + 1)
    out.append(end)


def _tag(el: Any, name: str) -> tuple[str, str]:
    """The HTML element (and its attributes) for a narrative element."""
    if name in _SIMPLE:
        return name, _spans(el) if name in ("td", "th") else ""
    if name == "paragraph":
        blocks = any(_local(c) in _BLOCKS for c in el)
        return ("div", ' class="cda-paragraph"') if blocks else ("p", "")
    if name == "item":
        return "li", ""
    if name == "caption":
        return "strong", ' class="cda-caption"'
    if name == "footnote":
        return "small", ' class="cda-footnote"'
    if name == "content":
        revised = el.get("revised")
        if revised == "delete":
            return "del", ""
        if revised == "insert":
            return "ins", ""
    return "span", ""


def _spans(el: Any) -> str:
    attributes = ""
    for attribute in ("colspan", "rowspan"):
        value = (el.get(attribute) or "").strip()
        if value.isascii() and value.isdigit() and 1 < int(value) <= 1000:
            attributes += f' {attribute}="{int(value)}"'
    return attributes


def _style_tags(el: Any) -> list[str]:
    tags: list[str] = []
    for token in (el.get("styleCode") or "").split():
        for tag in _STYLES.get(token.lower(), ()):
            if tag not in tags:
                tags.append(tag)
    return tags
