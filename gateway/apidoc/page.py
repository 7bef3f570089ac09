"""The OpenAPI document as one self-contained HTML page: no scripts, no CDN, nothing fetched, so it renders
offline, behind any Content-Security-Policy and without sending a visitor anywhere."""

from __future__ import annotations

import re
from html import escape
from typing import Any

_CODE = re.compile(r"`([^`]+)`")

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}
h2{margin-top:2.5rem;border-top:1px solid #ddd;padding-top:1rem}
code,.t{font-family:ui-monospace,monospace;font-size:.9em}
.m{display:inline-block;min-width:3.5rem;font-weight:700;color:#fff;background:#2f6f3e;border-radius:4px;
padding:0 .4rem;text-align:center}.get{background:#2c5aa0}
table{border-collapse:collapse;width:100%;margin:.5rem 0}td,th{border-bottom:1px solid #eee;padding:.3rem;
text-align:left;vertical-align:top}th{font-weight:600}
"""


def _text(markdown: str) -> str:
    """Escaped prose with its `code` spans set as code (the descriptions' only markup)."""
    return _CODE.sub(r"<code>\1</code>", escape(markdown))


def _type(schema: dict[str, Any]) -> str:
    """A JSON Schema as a short type expression: ``string | null``, ``array of Result``."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_type(option) for option in schema["anyOf"])
    if "const" in schema:
        return f'"{schema["const"]}"'
    if "enum" in schema:
        return " | ".join(f'"{value}"' for value in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    return str(kind)


def _fields(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    if "$ref" in schema:
        schema = schemas[str(schema["$ref"]).rsplit("/", 1)[-1]]
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        return ""
    required = set(schema.get("required", []))
    rows = "".join(
        f"<tr><td><code>{escape(name)}</code></td><td class=t>{escape(_type(field))}</td>"
        f"<td>{'yes' if name in required else ''}</td><td>{_text(field.get('description', ''))}</td></tr>"
        for name, field in properties.items()
    )
    return f"<table><tr><th>field</th><th>type</th><th>required</th><th>meaning</th></tr>{rows}</table>"


def _operation(path: str, method: str, operation: dict[str, Any], schemas: dict[str, Any]) -> str:
    parts = [
        f'<h2 id="{escape(operation["operationId"])}"><span class="m {method}">{method.upper()}</span> '
        f"<code>{escape(path)}</code> {escape(operation['summary'])}</h2>"
    ]
    if "description" in operation:
        parts.append(f"<p>{_text(operation['description'])}</p>")
    if operation.get("security"):
        parts.append("<p>Needs an API key: <code>Authorization: Bearer rk_...</code></p>")
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body:
        name = _type(body["schema"])
        parts.append(f"<h3>Request body: {escape(name)}</h3>")
        parts.append(f"<p>{_text(schemas[name].get('description', ''))}</p>")
        parts.append(_fields(body["schema"], schemas))
    rows = []
    for status, response in operation["responses"].items():
        content = response.get("content", {})
        shape = next((_type(media["schema"]) for media in content.values()), "")
        rows.append(
            f"<tr><td><code>{escape(status)}</code></td><td class=t>{escape(shape)}</td>"
            f"<td>{_text(response['description'])}</td></tr>"
        )
    parts.append("<h3>Responses</h3><table><tr><th>status</th><th>body</th><th>meaning</th></tr>")
    parts.append("".join(rows) + "</table>")
    return "\n".join(parts)


def render(document: dict[str, Any]) -> str:
    info = document["info"]
    schemas: dict[str, Any] = document["components"]["schemas"]
    operations = [
        _operation(path, method, operation, schemas)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    shapes = [
        f'<h2 id="schema-{escape(name)}">{escape(name)}</h2><p>{_text(schema.get("description", ""))}</p>'
        + _fields(schema, schemas)
        for name, schema in schemas.items()
        if schema.get("properties")
    ]
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(info["title"])}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>'
        f"<body><h1>{escape(info['title'])} <small>{escape(info['version'])}</small></h1>"
        f"<p>{_text(info['description'])}</p>"
        '<p>Machine-readable: <a href="/openapi.json"><code>/openapi.json</code></a> (OpenAPI 3.1), for '
        "client generators and API tools.</p>" + "\n".join(operations) + "<h2>Types</h2>" + "\n".join(shapes)
        + "</body></html>"
    )  # fmt: skip
