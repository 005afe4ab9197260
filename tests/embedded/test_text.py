"""Markup cleaning and splitting of the demo corpus, on small hand-written inputs."""

from __future__ import annotations

from embedded.text import (
    MAX_CHARS,
    Section,
    clean_inline,
    pack_sections,
    play_sections,
    rst_sections,
    split_long,
)

RST = """\
.. SPDX-License-Identifier: GPL-2.0

.. _intro-label:

==========
Main title
==========

Intro with :func:`open`, :class:`~os.PathLike`, :ref:`the guide <guide-label>`,
``literal *not emphasis*``, *emphasis*, **strong** and `a link <https://example.org>`_.
See :pep:`8`.

.. toctree::
   :maxdepth: 2

   hidden/page

.. function:: open(file, mode='r')
              open(fd)
   :noindex:

   Open a file.

   .. versionadded:: 3.3

.. note:: Mind the gap.

Section two
-----------

Example::

    x = *args  # :func:`not a role` stays verbatim in code

+-----+-----+
| a   | b   |
+=====+=====+
| 1   | 2   |
+-----+-----+
"""


def test_rst_sections_split_at_headings_and_drop_markup() -> None:
    sections = rst_sections(RST)
    assert [s.title for s in sections] == ["Main title", "Section two"]
    intro = sections[0].body
    assert "Intro with open, PathLike, the guide," in intro
    assert "literal *not emphasis*, emphasis, strong and a link." in intro
    assert "See PEP 8." in intro
    assert "toctree" not in intro and "hidden/page" not in intro and "maxdepth" not in intro
    assert "SPDX" not in intro and "intro-label" not in intro
    assert "open(file, mode='r')\nopen(fd)" in intro and ":noindex:" not in intro
    assert "Open a file." in intro and "New in version 3.3." in intro
    assert "Note: Mind the gap." in intro
    two = sections[1].body
    assert "Example:\n\nx = *args  # :func:`not a role` stays verbatim in code" in two
    assert "+-----" not in two and "a  b" in two and "1  2" in two


def test_clean_inline_keeps_code_like_stars() -> None:
    assert clean_inline("def f(*args, **kwargs): pass") == "def f(*args, **kwargs): pass"
    assert (
        clean_inline(":c:func:`kmalloc()` and :doc:`/admin-guide/index`")
        == "kmalloc() and /admin-guide/index"
    )


def test_split_long_respects_limit_and_balances() -> None:
    paragraphs = [f"paragraph {i} " + "word " * 60 for i in range(20)]
    text = "\n\n".join(paragraphs)
    pieces = split_long(text, 1000)
    assert all(len(p) <= 1000 for p in pieces)
    assert "\n\n".join(pieces) == text  # nothing lost or reordered
    assert min(map(len, pieces)) > 0.5 * max(map(len, pieces))  # no scrap at the end


def test_split_long_cuts_one_enormous_line() -> None:
    pieces = split_long("x" * 2500, 1000)
    assert "".join(pieces) == "x" * 2500 and all(len(p) <= 1000 for p in pieces)


def test_pack_sections_merges_small_and_splits_large() -> None:
    sections = [Section("A", "short"), Section("B", "also short"), Section("C", "long " * 2000)]
    docs = pack_sections(sections, min_chars=100, max_chars=MAX_CHARS)
    assert docs[0].startswith("A\n\nshort\n\nB\n\nalso short")
    assert all(len(d) <= MAX_CHARS for d in docs)
    assert "".join(docs).count("g") == 2000  # hard cuts may split a word, but lose nothing


def test_play_sections_name_the_play_in_every_scene() -> None:
    play = "HAMLET\n\nPERSONS.\n\nHamlet.\n\nACT I.\n\nScene I. Elsinore.\n\nBer.\nWho's there?\n\nScene II. A room.\n\nKing.\nThough yet.\n"
    sections = play_sections(play)
    titles = [s.title for s in sections]
    assert titles == ["", "HAMLET. Scene I. Elsinore.", "HAMLET. Scene II. A room."]
    assert sections[1].body == "Ber.\nWho's there?"
