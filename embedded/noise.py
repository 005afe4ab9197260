"""Noise injected into clean text the way web corpora are noisy, for the MiniPLM replication.

Each generator is a pure function of its inputs and a seeded `random.Random`:
- shuffled: the document's words in random order (word salad: right vocabulary, no syntax);
- boilerplate: site chrome (navigation, cookie banners, copyright lines) repeated, with small
  variations so that no two documents are byte-identical (an exact-duplicate filter would
  otherwise do the work the score is meant to do);
- random_chars: random letters, digits, punctuation and spaces (encoding debris, base64-like junk);
- near_duplicate: a copy of another document with a few words replaced or dropped (redundancy:
  the text itself is fine, the budget spent on it is not);
- garbled: machine-translation-like damage: function words dropped, neighbours swapped, words
  replaced by others from the same text, sentence capitals lost.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence

NOISE_KINDS = ("shuffled", "boilerplate", "random_chars", "near_duplicate", "garbled")

_FUNCTION_WORDS = frozenset(
    "a an the of to in on at by for with from and or but is are was were be been that this it as".split()
)
_SITES = (
    "Example News",
    "TechDaily",
    "MyBlog",
    "ShopSmart",
    "City Guide",
    "Recipe Hub",
    "DevForum",
    "Travel Notes",
)
_BOILERPLATE = (
    "Home | About Us | Contact | Privacy Policy | Terms of Service | Sitemap",
    "Copyright © {year} {site}. All rights reserved.",
    "This website uses cookies to improve your experience. Accept | Read More",
    "Subscribe to our newsletter and get the latest updates straight to your inbox!",
    "Share this: Facebook | Twitter | LinkedIn | Email | Print",
    "Posted by admin on {month} {day}, {year} | {n} Comments",
    "Related posts: Top {n} tips you need to know | Click here to learn more",
    "Skip to content. Menu. Search for:",
)
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_RANDOM_ALPHABET = string.ascii_letters + string.digits + string.punctuation + " " * 12


def shuffled(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def boilerplate(length: int, rng: random.Random) -> str:
    """Site chrome lines, drawn and repeated until about `length` characters."""
    site, year = rng.choice(_SITES), rng.randint(2005, 2024)
    # Always one dated line: with ~650k combinations, two documents are practically never identical.
    lines = [
        _BOILERPLATE[5].format(
            month=rng.choice(_MONTHS), day=rng.randint(1, 28), year=year, n=rng.randint(2, 99)
        )
    ]
    while sum(len(line) + 1 for line in lines) < length:
        template = rng.choice(_BOILERPLATE)
        lines.append(
            template.format(
                site=site, year=year, month=rng.choice(_MONTHS), day=rng.randint(1, 28), n=rng.randint(2, 99)
            )
        )
    return "\n".join(lines)


def random_chars(length: int, rng: random.Random) -> str:
    return "".join(rng.choice(_RANDOM_ALPHABET) for _ in range(length))


def near_duplicate(text: str, rng: random.Random, edit_rate: float = 0.05) -> str:
    """`text` with about edit_rate of its words replaced by another of its words or dropped."""
    tokens = re.split(r"(\s+)", text)  # keeps the whitespace, so line structure survives
    words = [i for i, t in enumerate(tokens) if t and not t.isspace()]
    for i in words:
        if rng.random() < edit_rate:
            tokens[i] = "" if rng.random() < 0.5 else tokens[rng.choice(words)]
    return "".join(tokens)


def garbled(text: str, rng: random.Random) -> str:
    out_lines = []
    for line in text.split("\n"):
        words = line.split()
        kept = [w for w in words if not (w.lower() in _FUNCTION_WORDS and rng.random() < 0.6)]
        for i in range(len(kept) - 1):
            if rng.random() < 0.15:
                kept[i], kept[i + 1] = kept[i + 1], kept[i]
        pool = words or [""]
        kept = [rng.choice(pool) if rng.random() < 0.1 else w for w in kept]
        out_lines.append(" ".join(w.lower() if rng.random() < 0.5 else w for w in kept))
    return "\n".join(out_lines)


def make_noise(kind: str, text: str, other: str, rng: random.Random) -> str:
    """A noisy document of `kind`; `text` is the clean source, `other` the document a near-duplicate copies."""
    if kind == "shuffled":
        return shuffled(text, rng)
    if kind == "boilerplate":
        return boilerplate(len(text), rng)
    if kind == "random_chars":
        # Half length: junk characters cost about twice the tokens per character of prose.
        return random_chars(max(40, len(text) // 2), rng)
    if kind == "near_duplicate":
        return near_duplicate(other, rng)
    if kind == "garbled":
        return garbled(text, rng)
    raise ValueError(f"unknown noise kind {kind!r}; one of {', '.join(NOISE_KINDS)}")


def noisy_copies(texts: Sequence[str], count: int, rng: random.Random, chars: int = 2_000) -> list[str]:
    """`count` noisy documents made from a seeded draw of `texts` (each cut to `chars`), the kinds in turn."""
    if not texts:
        raise ValueError("no documents to make noise from")
    out = []
    for i in range(count):
        text, other = rng.choice(texts)[:chars], rng.choice(texts)[:chars]
        out.append(make_noise(NOISE_KINDS[i % len(NOISE_KINDS)], text, other, rng))
    return out
