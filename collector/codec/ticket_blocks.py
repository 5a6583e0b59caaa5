"""The blocks of a ticket body (text runs, headings, paragraphs, bullet lists, tables).

The alert engine composes them (:mod:`collector.pipelines.alert_documents`); the renderers
(:mod:`collector.codec.markdown`, :mod:`collector.codec.adf`) turn them into each sink's format.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Text:
    text: str
    bold: bool = False
    code: bool = False
    href: str = ""


Inline = Text | str


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 3


@dataclass(frozen=True)
class Para:
    parts: tuple[Inline, ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[tuple[Inline, ...], ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


Block = Heading | Para | Bullets | Table
