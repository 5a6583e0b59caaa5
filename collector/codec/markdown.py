"""Ticket blocks as GitHub-flavoured Markdown (GitHub issues, the webhook, the file sink)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from collector.codec.ticket_blocks import Block, Bullets, Heading, Inline, Para

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<|])")


def _md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_inline(part: Inline) -> str:
    if isinstance(part, str):
        return _md_escape(part)
    if part.code:
        tick = "``" if "`" in part.text else "`"
        out = f"{tick}{part.text}{tick}"
    else:
        out = _md_escape(part.text)
    if part.bold:
        out = f"**{out}**"
    if part.href:
        out = f"[{out}]({part.href.replace(')', '%29').replace(' ', '%20')})"
    return out


def render_markdown(blocks: Sequence[Block], marker: str = "") -> str:
    """The blocks, then ``marker`` hidden in an HTML comment (when given)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + _md_escape(b.text))
        elif isinstance(b, Para):
            out.append("".join(_md_inline(p) for p in b.parts))
        elif isinstance(b, Bullets):
            out.append("\n".join("- " + "".join(_md_inline(p) for p in item) for item in b.items))
        else:
            rows = [b.header, tuple("---" for _ in b.header), *b.rows]
            out.append("\n".join("| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows))
    if marker:
        out.append(f"<!-- {marker} -->")
    return "\n\n".join(out) + "\n"
