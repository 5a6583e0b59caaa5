"""Ticket blocks as Atlassian Document Format (version 1), the body format of Jira Cloud REST v3."""

from __future__ import annotations

from collections.abc import Sequence

from collector.codec.ticket_blocks import Block, Bullets, Heading, Inline, Para
from collector.ports import JsonObject, JsonValue


def _adf_inline(part: Inline) -> JsonObject:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    marks: list[JsonValue] = []
    if part.bold:
        marks.append({"type": "strong"})
    if part.code:
        marks.append({"type": "code"})
    if part.href:
        marks.append({"type": "link", "attrs": {"href": part.href}})
    node: JsonObject = {"type": "text", "text": part.text}
    if marks:
        node["marks"] = marks
    return node


def _adf_para(parts: Sequence[Inline]) -> JsonObject:
    content: list[JsonValue] = [_adf_inline(p) for p in parts if (p if isinstance(p, str) else p.text)]
    return {"type": "paragraph", "content": content} if content else {"type": "paragraph"}


def _cell(kind: str, text: str) -> JsonObject:
    return {"type": kind, "content": [_adf_para([text])]}


def render_adf(blocks: Sequence[Block]) -> JsonObject:
    """The ADF document of ``blocks``."""
    content: list[JsonValue] = []
    for b in blocks:
        if isinstance(b, Heading):
            content.append(
                {
                    "type": "heading",
                    "attrs": {"level": b.level},
                    "content": [{"type": "text", "text": b.text}],
                }
            )
        elif isinstance(b, Para):
            content.append(_adf_para(b.parts))
        elif isinstance(b, Bullets):
            content.append(
                {
                    "type": "bulletList",
                    "content": [{"type": "listItem", "content": [_adf_para(item)]} for item in b.items],
                }
            )
        else:
            rows: list[JsonValue] = [
                {"type": "tableRow", "content": [_cell("tableHeader", h) for h in b.header]}
            ]
            rows += [{"type": "tableRow", "content": [_cell("tableCell", c) for c in r]} for r in b.rows]
            content.append({"type": "table", "content": rows})
    return {"type": "doc", "version": 1, "content": content}
