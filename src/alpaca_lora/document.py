"""One document, two renderings: the reports are built as a list of blocks, then written as Markdown and as
a self-contained HTML page by two renderers that escape every text they are given.

Nothing is ever parsed back: model answers, prompts and file names are data, never markup. In the HTML every
text goes through `html.escape`; in the Markdown plain text is backslash-escaped (CommonMark) and answers go
into fenced code blocks whose fence is longer than any run of backticks inside them, so an answer holding
`</pre>`, `&quot;`, `# Example usage:` or a code fence shows exactly as it was written.

Blocks: Heading, Paragraph, Bullets, Table (columns and rows of values, formatted per column), Image,
Answers (a table of answers side by side, each with a note), Code. Inline text is a list of spans: plain
`str`, `Code`, `Link`, `Strong`. A table's columns say how their values are shown, so a new column (say a
confidence interval) is one more `Column` and one more key in each row.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ---- inline text ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Link:
    text: str
    href: str


@dataclass(frozen=True)
class Strong:
    text: str


Span = str | Code | Link | Strong
Inline = list[Span]

# ---- blocks -----------------------------------------------------------------------------------------------


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    inline: Inline


@dataclass
class Bullets:
    items: list[Inline]


def number(digits: int) -> Callable[[Any], str]:
    """A column format: floats to `digits` decimals, integers as they are, None as n/a."""

    def show(value: Any) -> str:
        if value is None or value == "":
            return "n/a"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value)

    return show


def plain(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass
class Column:
    key: str
    title: str
    format: Callable[[Any], str] = plain
    numeric: bool = False  # right-aligned in LaTeX


@dataclass
class Table:
    columns: list[Column]
    rows: list[dict]

    def header(self) -> list[str]:
        return [column.title for column in self.columns]

    def cells(self) -> list[list[str]]:
        """Every row as shown: each value through its column's format, on one line."""
        return [
            [" ".join(column.format(row.get(column.key)).split("\n")) for column in self.columns]
            for row in self.rows
        ]


@dataclass
class Image:
    path: str  # the PNG file: linked (relative) from the Markdown, embedded in the HTML
    link: str  # the path relative to the Markdown file
    alt: str


@dataclass
class Answer:
    text: str
    note: str = ""


@dataclass
class Answers:
    """Answers side by side: one row per prompt, one cell per answer (prompt and reference included)."""

    header: list[str]
    rows: list[list[Answer]]
    row_titles: list[str] = field(default_factory=list)  # Markdown: a heading per row


@dataclass
class CodeBlock:
    text: str
    language: str = ""


Block = Heading | Paragraph | Bullets | Table | Image | Answers | CodeBlock

# ---- Markdown ---------------------------------------------------------------------------------------------

# Characters that start inline markup anywhere (emphasis, code, links, HTML, entities, tables, strikethrough);
# an underscore inside a word (eval_loss_tuned) cannot start emphasis and stays as it is, for readability.
_INLINE_SPECIAL = re.compile(r"([\\`*\[\]<>|~&!]|(?<![^\W_])_|_(?![^\W_]))")
# What starts a block when it begins a line: headings, list items, setext underlines (quotes: `>` above).
_BLOCK_START = {"#", "+", "-", "="}


def md_escape(text: str, block: bool = True) -> str:
    """Plain text as CommonMark that renders to exactly this text (line breaks kept as soft breaks).

    `block`: the text begins lines (a paragraph, a heading), so what would start a list, a heading or an
    indented code block there is escaped too; table cells and inline spans need only the inline escapes.
    """
    escaped = _INLINE_SPECIAL.sub(r"\\\1", text)
    return block_safe(escaped) if block else escaped


def block_safe(markdown: str) -> str:
    """Inline Markdown that may begin lines: no line starts a heading, a list or an indented code block."""
    lines = []
    for line in markdown.split("\n"):
        line = line.lstrip()
        ordered = re.match(r"^\d+(?=[.)])", line)
        if ordered:
            line = f"{ordered.group()}\\{line[ordered.end() :]}"
        elif line[:1] in _BLOCK_START:
            line = "\\" + line
        lines.append(line)
    return "\n".join(lines)


def md_code(text: str) -> str:
    """An inline code span holding `text` literally (a longer backtick run when the text has backticks)."""
    run = max((len(r) for r in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or run else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_fence(text: str, language: str = "") -> list[str]:
    """A fenced code block holding `text` literally: the fence is longer than any backtick run inside."""
    run = max((len(r) for r in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, run + 1)
    return [f"{fence}{language}", *text.split("\n"), fence]


def md_destination(href: str) -> str:
    """A link destination: as it is, or in <...> when it holds spaces or parentheses."""
    return f"<{href}>" if re.search(r"[\s()<>]", href) else href


def md_inline(spans: Inline) -> str:
    parts = []
    for span in spans:
        if isinstance(span, Code):
            parts.append(md_code(span.text))
        elif isinstance(span, Link):
            parts.append(f"[{md_escape(span.text, block=False)}]({md_destination(span.href)})")
        elif isinstance(span, Strong):
            parts.append(f"**{md_escape(span.text, block=False)}**")
        else:
            parts.append(md_escape(span, block=False))
    return block_safe("".join(parts))


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def escape(text: str) -> str:
        return md_escape(text, block=False).replace("\n", " ")

    lines = ["| " + " | ".join(map(escape, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(escape, row)) + " |" for row in rows]
    return lines


def _md_answers(block: Answers) -> list[str]:
    lines: list[str] = []
    for index, row in enumerate(block.rows):
        title = block.row_titles[index] if block.row_titles else f"{index + 1}"
        lines += [f"### {md_escape(title)}", ""]
        for name, answer in zip(block.header, row, strict=True):
            note = f" — {md_escape(answer.note)}" if answer.note else ""
            lines += [f"**{md_escape(name)}**{note}", "", *md_fence(answer.text, "text"), ""]
    return lines


def to_markdown(blocks: Iterable[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + md_escape(block.text), ""]
        elif isinstance(block, Paragraph):
            lines += [md_inline(block.inline), ""]
        elif isinstance(block, Bullets):
            lines += [*("- " + md_inline(item) for item in block.items), ""]
        elif isinstance(block, Table):
            lines += [*md_table(block.header(), block.cells()), ""]
        elif isinstance(block, Image):
            lines += [f"![{md_escape(block.alt)}]({md_destination(block.link)})", ""]
        elif isinstance(block, Answers):
            lines += _md_answers(block)
        elif isinstance(block, CodeBlock):
            lines += [*md_fence(block.text, block.language), ""]
    return "\n".join(lines)


# ---- HTML -------------------------------------------------------------------------------------------------

STYLE = (
    "body{font-family:sans-serif;max-width:80em;margin:auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px;vertical-align:top}"
    "th{background:#f4f4f4}td.number{text-align:right;font-variant-numeric:tabular-nums}"
    "pre{white-space:pre-wrap;margin:0;font-size:90%}p.note{margin:.3em 0 0;color:#555;font-size:90%}"
    "img{max-width:100%}"
)


def html_inline(spans: Inline) -> str:
    parts = []
    for span in spans:
        if isinstance(span, Code):
            parts.append(f"<code>{html.escape(span.text)}</code>")
        elif isinstance(span, Link):
            parts.append(f'<a href="{html.escape(span.href)}">{html.escape(span.text)}</a>')
        elif isinstance(span, Strong):
            parts.append(f"<strong>{html.escape(span.text)}</strong>")
        else:
            parts.append(html.escape(span))
    return "".join(parts)


def html_table(table: Table, css_class: str = "values") -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for title in table.header())
    body = []
    for cells in table.cells():
        tds = "".join(
            f'<td class="number">{html.escape(text)}</td>'
            if column.numeric
            else f"<td>{html.escape(text)}</td>"
            for column, text in zip(table.columns, cells, strict=True)
        )
        body.append(f"<tr>{tds}</tr>")
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _html_answers(block: Answers) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in block.header)
    rows = []
    for row in block.rows:
        cells = "".join(
            # The parser drops a newline right after <pre>: this one, never the answer's own first line break.
            f'<td class="answer"><pre>\n{html.escape(answer.text)}</pre>'
            + (f'<p class="note">{html.escape(answer.note)}</p>' if answer.note else "")
            + "</td>"
            for answer in row
        )
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="answers"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{html_inline(block.inline)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{html_inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return html_table(block)
    if isinstance(block, Image):
        data = base64.b64encode(Path(block.path).read_bytes()).decode("ascii")
        return f'<p><img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}"></p>'
    if isinstance(block, Answers):
        return _html_answers(block)
    if isinstance(block, CodeBlock):
        return f"<pre><code>{html.escape(block.text)}</code></pre>"
    raise TypeError(f"not a block: {block!r}")


def to_html(blocks: Iterable[Block], title: str) -> str:
    """A self-contained page: every image embedded as a data URI."""
    body = "\n".join(_html_block(block) for block in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


# ---- LaTeX ------------------------------------------------------------------------------------------------

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    escaped = "".join(_LATEX_SPECIAL.get(character, character) for character in text)
    # "--" would print as an en dash (grid cell names hold it).
    return escaped.replace("--", "-{}-")


def to_latex(table: Table) -> str:
    """A booktabs `tabular` (needs \\usepackage{booktabs})."""
    spec = "".join("r" if column.numeric else "l" for column in table.columns)
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    lines.append(" & ".join(latex_escape(title) for title in table.header()) + " \\\\")
    lines.append("\\midrule")
    lines += [" & ".join(latex_escape(text) for text in row) + " \\\\" for row in table.cells()]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from alpaca_lora.common import module_help

    module_help(__doc__ + "\nA library: nothing to run.").parse_args()
