"""Plain words for reason text: labels, category values, plurals and identifiers.

Reasons are read by salespeople, so what the data holds is put in their words:
``c_level`` reads ``C-level``, a recency-weighted count reads ``Used key features
recently (0.4 recent feature uses)``, and a hash or an id is never shown raw
(:func:`looks_like_an_id`).
"""

from __future__ import annotations

import re

#: Words written in capitals (or their own case) when a lower-case value is humanised.
ABBREVIATIONS: dict[str, str] = {
    word.lower(): word
    for word in (
        "VP", "IT", "SaaS", "CEO", "CTO", "CFO", "COO", "CMO", "CIO", "HR", "B2B", "B2C",
        "SMB", "EMEA", "APAC", "LATAM", "NPS", "CRM", "ERP", "API", "AI", "ML", "SEO",
        "PPC", "ID", "USA", "UK", "EU", "SMS", "PR", "R&D", "QA", "UX", "UI",
    )
}  # fmt: skip

#: How a recency-weighted count of a declared event type reads (``{value}`` inserted).
RECENTLY: dict[str, str] = {
    "feature_use": "Used key features recently",
    "login": "Logged in recently",
    "session": "Used the product recently",
    "page_view": "Visited the website recently",
    "pricing_page_view": "Visited the pricing page recently",
    "email_opened": "Opened emails recently",
    "email_clicked": "Clicked links in emails recently",
    "form_submit": "Filled in forms recently",
    "content_download": "Downloaded content recently",
    "webinar_registered": "Registered for webinars recently",
    "webinar_attended": "Attended webinars recently",
    "demo_request": "Asked for a demo recently",
    "purchase": "Bought recently",
    "ticket_opened": "Opened support tickets recently",
}

_HEX = re.compile(r"[0-9a-fA-F]{16,}")
_UUID = re.compile(r"[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}")
_DIGITS = re.compile(r"\d{8,}")
_TOKEN = re.compile(r"[A-Za-z0-9]{15,}")


def capitalised(text: str) -> str:
    """``text`` with its first letter upper-cased and the rest as written (MonthlyCharges)."""
    return text[:1].upper() + text[1:]


def singular_noun(noun: str) -> str:
    """The singular of a plural noun phrase: its first plural word loses its ``s``.

    ``"pricing page visits"`` -> ``"pricing page visit"``, ``"webinars attended"`` ->
    ``"webinar attended"``, ``"sales call events"`` -> ``"sales call event"``; a
    phrase without such a word is returned as it is.
    """
    words = noun.split(" ")
    if words[-1] == "events":  # an undeclared type's noun: "<name> events"
        return " ".join([*words[:-1], "event"])
    for i, word in enumerate(words):
        if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
            words[i] = word[:-1]
            return " ".join(words)
    return noun


def humanised(value: str) -> str:
    """A category value in plain words: ``c_level`` -> ``C-level``, ``vp`` -> ``VP``.

    Underscores become spaces, a one-letter word joins the next with a hyphen
    (``e_commerce`` -> ``E-commerce``), known abbreviations (:data:`ABBREVIATIONS`)
    are written in capitals and the first letter is upper-cased. A value that
    already has a capital letter is the user's own spelling and is kept as it is.
    """
    if value != value.lower() or not value.strip():
        return value
    words = [w for w in re.split(r"[_\s]+", value.strip()) if w]
    out: list[str] = []
    for i, word in enumerate(words):
        word = ABBREVIATIONS.get(word, word)
        if out and len(out[-1]) == 1 and out[-1].isalpha() and i > 0:
            out[-1] = f"{out[-1].upper()}-{word}"
        else:
            out.append(word)
    return capitalised(" ".join(out))


def looks_like_an_id(value: object) -> bool:
    """Whether a value reads as an identifier rather than a word people use.

    Hex strings of 16 or more characters (hashes), UUIDs, runs of 8 or more digits,
    and unbroken letter-and-digit tokens of 15 or more characters with at least four
    digits (CRM record ids such as ``00Q5e00000AbCdEF``).
    """
    text = str(value).strip()
    if _HEX.fullmatch(text) or _UUID.fullmatch(text) or _DIGITS.fullmatch(text):
        return True
    return bool(_TOKEN.fullmatch(text)) and sum(ch.isdigit() for ch in text) >= 4
