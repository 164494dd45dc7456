"""The little Markdown people write in one-line descriptions and change summaries, rendered safely.

Supported: `code`, **bold**, and [links](https://…) to http(s) or to a path on the portal. Everything else
is text. The input is HTML-escaped first and only these patterns are turned back into tags, so no HTML
(and no `javascript:` or protocol-relative link) from a description ever reaches the page. Pure: text in,
HTML text out (the template filter marks it safe).
"""

from __future__ import annotations

import html
import re

_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
# After escaping, a URL cannot hold a quote or a bracket; "//host" (another site without a scheme) is not a path.
_LINK = re.compile(r"\[([^\[\]\n]+)\]\(((?:https?://|/(?!/))[^\s()<>]*)\)")


def inline_markdown_html(text: object) -> str:
    """HTML for `text`: escaped, with `code`, **bold** and [text](url) as tags. Code spans are literal."""
    escaped = html.escape(str(text or ""), quote=True)
    out: list[str] = []
    position = 0
    for match in _CODE.finditer(escaped):
        out.append(_bold_and_links(escaped[position:match.start()]))
        out.append(f"<code>{match.group(1)}</code>")
        position = match.end()
    out.append(_bold_and_links(escaped[position:]))
    return "".join(out)


def _bold_and_links(escaped: str) -> str:
    linked = _LINK.sub(lambda m: f'<a href="{m.group(2)}" rel="nofollow noopener noreferrer">{m.group(1)}</a>',
                       escaped)
    return _BOLD.sub(r"<strong>\1</strong>", linked)
