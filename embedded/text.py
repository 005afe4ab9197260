"""Markup cleaning and document splitting for the demo corpus (pure functions, no I/O).

reStructuredText (Python and kernel documentation) is reduced to the prose and code a reader sees:
headings keep their title and lose their underlines, roles and links keep their visible text,
directives that render nothing readable (toctree, index, images, includes) are dropped with their
bodies, and the rest keep their body. Long texts are split at section, then paragraph, then line
boundaries into documents of at most `max_chars`; short neighbouring sections are packed together.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass

# Roughly 250-700 tokens per document: long enough to be a document, short enough that a CPU
# scores a useful number of them in a demo.
MIN_CHARS = 400
MAX_CHARS = 3000

# Directives whose output is not prose (navigation, indexes, images, included files, build
# switches): dropped together with their indented body.
DROP_DIRECTIVES = frozenset(
    {
        "audit-event-table",
        "c:namespace",
        "c:namespace-pop",
        "c:namespace-push",
        "contents",
        "csv-table",
        "currentmodule",
        "default-domain",
        "default-role",
        "figure",
        "graphviz",
        "highlight",
        "image",
        "include",
        "index",
        "kernel-abi",
        "kernel-doc",
        "kernel-feat",
        "kernel-figure",
        "kernel-include",
        "kernel-render",
        "literalinclude",
        "math",
        "moduleauthor",
        "only",
        "productionlist",
        "raw",
        "rst-class",
        "cssclass",
        "sectionauthor",
        "sectnum",
        "tabularcolumns",
        "testcleanup",
        "testsetup",
        "toctree",
        "program",
        "module",
        "py:module",
        "py:currentmodule",
        "c:module",
        "audit-event",
    }
)
# Directives rendered as a sentence built from their argument (as Sphinx does).
VERSION_DIRECTIVES = {
    "versionadded": "New in version {}.",
    "versionchanged": "Changed in version {}.",
    "deprecated": "Deprecated since version {}.",
    "deprecated-removed": "Deprecated since version {}.",
}
# Admonitions: their argument is text, rendered after a label (None: the argument is a title).
ADMONITIONS = {
    "note": "Note",
    "warning": "Warning",
    "seealso": "See also",
    "tip": "Tip",
    "hint": "Hint",
    "important": "Important",
    "caution": "Caution",
    "attention": "Attention",
    "danger": "Danger",
    "error": "Error",
    "impl-detail": "CPython implementation detail",
    "admonition": "",
    "topic": "",
    "rubric": "",
    "sidebar": "",
}
# Directives whose body is code: no inline markup processing inside.
CODE_DIRECTIVES = frozenset(
    {"code-block", "code", "sourcecode", "doctest", "testcode", "testoutput", "parsed-literal"}
)

_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:.-]+)::\s*(.*)$")
_COMMENT = re.compile(r"^(\s*)\.\.(\s|$)")
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+_.:<>])\1{2,}\s*$")
_TABLE_BORDER = re.compile(r"^\s*(?:[+|][-=+:| ]*[+|]|=+(?:\s+=+)+|-+(?:\s+-+)+)\s*$")
_OPTION_LINE = re.compile(r"^\s+:[\w\s-]+:(\s.*)?$")
_ROLE = re.compile(r":(?:[\w-]+:)*([\w-]+):`([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>`]*>`__?")
_REF = re.compile(r"`([^`]+)`__?")
_DEFAULT_ROLE = re.compile(r"(?<![\w`])`([^`]+)`(?![\w`])")
_STRONG = re.compile(r"(?<![\w*\\])\*\*(\S(?:[^*]*?\S)?)\*\*(?![\w*])")
_EMPHASIS = re.compile(r"(?<![\w*\\])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")
_FOOTNOTE_REF = re.compile(r"\s*\[(?:#\w*|\d+|\*)\]_")
_BLANK_RUNS = re.compile(r"\n{3,}")
_SUBSTITUTION = re.compile(r"\|([\w.-]+)\|_{0,2}")
_GRID_ROW = re.compile(r"^\s*\|.*\|\s*$")
# A role whose text wraps onto the next line; the line-by-line pass cannot see it whole.
_WRAPPED_ROLE = re.compile(r":(?:[\w-]+:)*[\w-]+:`([^`]+\n[^`]*)`")


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    body: str


def _role_text(content: str, role: str = "") -> str:
    """Visible text of a role: `title <target>` -> title; `~a.b.c` -> c; `!x` -> x; :pep:`8` -> PEP 8."""
    if role in ("pep", "rfc") and content.strip().isdigit():
        return f"{role.upper()} {content.strip()}"
    match = re.match(r"^(.*?)\s*<[^>]*>$", content, flags=re.S)
    if match and match.group(1):
        return match.group(1)
    if content.startswith("~"):
        return content[1:].rsplit(".", 1)[-1]
    return content.lstrip("!")


def clean_inline(line: str) -> str:
    """Inline rST markup -> the text it renders as. Literals are protected from the later rules."""
    literals: list[str] = []

    def keep(text: str) -> str:
        literals.append(text)
        return f"\x00{len(literals) - 1}\x00"

    line = _LITERAL.sub(lambda m: keep(m.group(1)), line)
    line = _ROLE.sub(lambda m: keep(_role_text(m.group(2), m.group(1))), line)
    line = _LINK.sub(lambda m: m.group(1), line)
    line = _REF.sub(lambda m: m.group(1), line)
    line = _DEFAULT_ROLE.sub(lambda m: m.group(1), line)
    line = _STRONG.sub(lambda m: m.group(1), line)
    line = _EMPHASIS.sub(lambda m: m.group(1), line)
    line = _FOOTNOTE_REF.sub("", line)
    line = _SUBSTITUTION.sub(lambda m: m.group(1), line)
    if _GRID_ROW.match(line):
        line = re.sub(r"\s*\|\s*", "  ", line).strip()
    return re.sub(r"\x00(\d+)\x00", lambda m: literals[int(m.group(1))], line)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_heading(lines: list[str], i: int) -> bool:
    """Line i is a title whose next line underlines it (at least as long, as rST requires)."""
    if i + 1 >= len(lines):
        return False
    title, under = lines[i], lines[i + 1]
    overlined = i > 0 and bool(_UNDERLINE.match(lines[i - 1]))
    return bool(
        title.strip()
        and (overlined or not title.startswith(" "))
        and not _UNDERLINE.match(title)
        and _UNDERLINE.match(under)
        and len(under.rstrip()) >= len(title.rstrip()) - 1
    )


def rst_sections(source: str, default_title: str = "") -> list[Section]:
    """Split reStructuredText at its headings and reduce each section to readable text."""
    lines = source.replace("\r\n", "\n").replace("\r", "\n").expandtabs(8).split("\n")
    sections: list[Section] = []
    title, out = default_title, []
    skip_deeper_than: int | None = None  # inside a dropped block: skip lines indented more than this
    literal_deeper_than: int | None = None  # inside a literal/code block: no inline processing
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        stripped = line.strip()
        if skip_deeper_than is not None:
            if not stripped or _indent(line) > skip_deeper_than:
                i += 1
                continue
            skip_deeper_than = None
        if literal_deeper_than is not None and stripped and _indent(line) <= literal_deeper_than:
            literal_deeper_than = None
        if literal_deeper_than is not None:
            out.append(line)
            i += 1
            continue
        if _is_heading(lines, i):
            if out and out[-1] and _UNDERLINE.match(out[-1]):
                out.pop()  # the overline of an over-and-underlined title
            sections.append(Section(title, "\n".join(out)))
            title, out = clean_inline(stripped), []
            i += 2
            continue
        directive = _DIRECTIVE.match(line)
        if directive:
            indent, name, argument = (
                len(directive.group(1)),
                directive.group(2).lower(),
                directive.group(3).strip(),
            )
            i += 1
            # Up to the first blank line come the argument's continuation lines (more signatures)
            # and the options (:maxdepth: 2, :noindex:), which render nothing.
            arguments = [argument] if argument else []
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) > indent:
                if not _OPTION_LINE.match(lines[i]):
                    arguments.append(lines[i].strip())
                i += 1
            if name in DROP_DIRECTIVES:
                skip_deeper_than = indent
                continue
            pad = " " * indent
            if name in VERSION_DIRECTIVES:
                version, _, rest = " ".join(arguments).partition(" ")
                out.append(pad + VERSION_DIRECTIVES[name].format(version))
                if rest.strip():
                    out.append(pad + clean_inline(rest.strip()))
            elif name in CODE_DIRECTIVES:
                literal_deeper_than = indent
            elif name in ADMONITIONS:
                label = ADMONITIONS[name]
                text = clean_inline(" ".join(arguments))
                out.append(pad + (f"{label}: {text}" if label and text else label + ":" if label else text))
            else:
                out.extend(pad + clean_inline(a) for a in arguments)  # signatures: `open(file, mode='r')`
            continue
        if _COMMENT.match(line):
            skip_deeper_than = _indent(line)  # comments, link targets and substitution definitions
            i += 1
            continue
        if _TABLE_BORDER.match(line) or _UNDERLINE.match(line):
            i += 1
            continue
        if stripped.endswith("::"):
            # "Example::" renders as "Example:" followed by a literal block; a bare "::" as nothing.
            text = stripped[:-2].rstrip()
            if text:
                out.append(" " * _indent(line) + clean_inline(text) + ":")
            literal_deeper_than = _indent(line)
            i += 1
            continue
        out.append(clean_inline(line))
        i += 1
    sections.append(Section(title, "\n".join(out)))
    return [
        Section(s.title, tidy(_WRAPPED_ROLE.sub(lambda m: _role_text(m.group(1)), s.body)))
        for s in sections
        if s.title or s.body.strip()
    ]


def tidy(text: str) -> str:
    """Dedent each paragraph, drop trailing spaces and runs of blank lines."""
    paragraphs = [textwrap.dedent(p).strip("\n") for p in re.split(r"\n\s*\n", text)]
    body = "\n\n".join(p for p in (q.rstrip() for q in paragraphs) if p.strip())
    return _BLANK_RUNS.sub("\n\n", "\n".join(line.rstrip() for line in body.split("\n"))).strip()


def split_long(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """Pieces of at most max_chars, cut at paragraph, else line, else hard boundaries.

    Pieces aim at an equal share of the text (not max_chars each), so that a text a little over
    the limit becomes two halves rather than a full piece and a scrap.
    """
    if len(text) <= max_chars:
        return [text] if text.strip() else []
    share = math.ceil(len(text) / math.ceil(len(text) / max_chars))
    max_chars = min(max_chars, share + share // 10)
    pieces: list[str] = []
    current = ""
    for unit in text.split("\n\n"):
        candidate = f"{current}\n\n{unit}" if current else unit
        if len(candidate) <= max_chars:
            current = candidate
            continue
        if len(unit) <= max_chars:
            if current:
                pieces.append(current)
            current = unit
            continue
        # A paragraph too long on its own is cut at lines, starting with what precedes it
        # (a heading stays with its text).
        pieces.extend(_split_lines(candidate, max_chars))
        current = ""
    if current.strip():
        pieces.append(current)
    return [p.strip("\n") for p in pieces if p.strip()]


def _split_lines(text: str, max_chars: int) -> Iterable[str]:
    current = ""
    for line in text.split("\n"):
        candidate = f"{current}\n{line}" if current else line
        while len(candidate) > max_chars:
            if current and len(line) <= max_chars:
                break  # the line fits a piece of its own: cut before it
            # One enormous line (a table row, a hex dump): fill the piece up and cut inside it.
            yield candidate[:max_chars]
            candidate, current, line = candidate[max_chars:], "", candidate[max_chars:]
        if len(candidate) <= max_chars:
            current = candidate
        else:
            yield current
            current = line
    if current:
        yield current


def pack_sections(
    sections: Iterable[Section], min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS
) -> list[str]:
    """Documents from sections: each starts with its section title; small neighbours are merged
    (up to max_chars) so that no document is a lone heading; large sections are split."""
    documents: list[str] = []
    pending = ""
    for section in sections:
        text = f"{section.title}\n\n{section.body}".strip() if section.title else section.body.strip()
        if not text:
            continue
        # A short pending text always joins the next (split_long cuts the result if it must); a
        # short next text joins the pending one when it fits.
        if pending and (
            len(pending) < min_chars or (len(text) < min_chars and len(pending) + 2 + len(text) <= max_chars)
        ):
            pending = f"{pending}\n\n{text}"
            continue
        if pending:
            documents.extend(split_long(pending, max_chars))
        pending = text
    if pending:
        documents.extend(split_long(pending, max_chars))
    # A short tail is merged back into its predecessor when it fits, rather than kept as a scrap.
    if (
        len(documents) >= 2
        and len(documents[-1]) < min_chars
        and len(documents[-2]) + 2 + len(documents[-1]) <= max_chars
    ):
        documents[-2:] = [f"{documents[-2]}\n\n{documents[-1]}"]
    return [d for d in documents if len(d.strip()) >= min(min_chars, 80)]


_PLAY_BREAK = re.compile(r"^(?:ACT|Act)\s+[IVXL]+\b|^(?:SCENE|Scene)\s+[IVXL]+\b")


def play_sections(text: str) -> list[Section]:
    """A Gutenberg play or poem -> sections at act/scene headings (poems: one section)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    play_title = next((line.strip() for line in lines if line.strip()), "")
    sections: list[Section] = []
    heading = ""
    out: list[str] = []
    for line in lines:
        if _PLAY_BREAK.match(line):
            sections.append(Section(heading, tidy("\n".join(out))))
            heading, out = line.strip(), []
        else:
            out.append(line.rstrip())
    sections.append(Section(heading, tidy("\n".join(out))))
    # Each scene names its play, so that a document read alone says where it comes from.
    return [
        Section(f"{play_title}. {s.title}" if s.title else "", s.body) for s in sections if s.body.strip()
    ]


def plain_sections(text: str) -> list[Section]:
    """Plain text (kernel .txt files): one untitled section, split later at paragraphs."""
    return [Section("", tidy(text.replace("\r\n", "\n").expandtabs(8)))]
