"""The API's docs page, rendered on the server from the OpenAPI schema (no CDN, no JS).

Operations grouped by their router's tag, each with its parameters, body fields and
answers; the models they name are listed once below, linked by anchor. The page is
public, like the schema it is built from: it describes the API and holds no data.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET

from webapp.api.root import openapi_schema

METHOD_ORDER = ("get", "post", "patch", "put", "delete")


CODE = re.compile(r"`+([^`]+?)`+")


def prose(text: str) -> SafeString:
    """A docstring or description as HTML: paragraphs joined, `code` and ``code`` as <code>."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    html = "".join("<p>" + CODE.sub(r"<code>\1</code>", escape(p)) + "</p>" for p in paragraphs)
    return mark_safe(html)  # noqa: S308 - every piece of text above is escaped first


def type_of(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema as ``{"text": "list of ", "ref": "RunRow"}`` parts for the template."""
    if "$ref" in schema:
        return {"text": "", "ref": schema["$ref"].rsplit("/", 1)[-1]}
    if "anyOf" in schema:
        kinds = [type_of(s) for s in schema["anyOf"] if s.get("type") != "null"]
        nullable = len(kinds) < len(schema["anyOf"])
        first = kinds[0] if kinds else {"text": "null", "ref": ""}
        names = " or ".join(k["text"] + k["ref"] for k in kinds[1:])
        suffix = (f" or {names}" if names else "") + (" or null" if nullable else "")
        return {"text": first["text"], "ref": first["ref"], "suffix": suffix}
    kind = schema.get("type", "any")
    if kind == "array":
        inner = type_of(schema.get("items", {}))
        return {"text": "list of " + inner["text"], "ref": inner["ref"], "suffix": inner.get("suffix", "")}
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        inner = type_of(schema["additionalProperties"])
        return {"text": "map of " + inner["text"], "ref": inner["ref"], "suffix": inner.get("suffix", "")}
    return {"text": kind, "ref": ""}


def fields_of(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "type": type_of(prop),
            "required": name in required,
            "description": prop.get("description", ""),
            "default": prop.get("default"),
        }
        for name, prop in schema.get("properties", {}).items()
    ]


def _body(operation: dict[str, Any], models: dict[str, Any]) -> dict[str, Any] | None:
    """The body's fields, read through its model's $ref (an optional body is ``Model or null``)."""
    body = operation.get("requestBody")
    if not body:
        return None
    schema = body["content"]["application/json"]["schema"]
    refs = [s["$ref"] for s in [schema, *schema.get("anyOf", [])] if "$ref" in s]
    model = models[refs[0].rsplit("/", 1)[-1]] if refs else schema
    return {
        "type": type_of(schema),
        "fields": fields_of(model),
        "required": body.get("required", False),
        "description": body.get("description", ""),
    }


def _answers(operation: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for status, answer in sorted(operation.get("responses", {}).items(), key=lambda item: str(item[0])):
        content = answer.get("content", {})
        if "application/json" in content:
            kind = type_of(content["application/json"].get("schema", {}))
        else:  # a download (a tar): its media type says what comes
            kind = {"text": next(iter(content)), "ref": ""} if content else None
        rows.append({"status": status, "type": kind})
    return rows


@functools.cache
def docs_context() -> dict[str, Any]:
    """What the docs page shows, read from the schema once per process (it never changes while it runs)."""
    schema = openapi_schema()
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, methods in schema["paths"].items():
        for method in METHOD_ORDER:
            operation = methods.get(method)
            if operation is None:
                continue
            tag = (operation.get("tags") or ["other"])[0]
            groups.setdefault(tag, []).append(
                {
                    "id": operation["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "description": prose(operation.get("description", "")),
                    "public": not operation.get("security"),
                    "parameters": [
                        {
                            "name": p["name"],
                            "in": p["in"],
                            "required": p.get("required", False),
                            "type": type_of(p.get("schema", {})),
                            "description": p.get("description", ""),
                        }
                        for p in operation.get("parameters", [])
                    ],
                    "body": _body(operation, schema["components"]["schemas"]),
                    "answers": _answers(operation),
                }
            )
    models = [
        {"name": name, "description": prose(model.get("description", "")), "fields": fields_of(model)}
        for name, model in sorted(schema["components"]["schemas"].items())
    ]
    info = {**schema["info"], "description": prose(schema["info"].get("description", ""))}
    return {"info": info, "groups": sorted(groups.items()), "models": models}


@require_GET
def docs(request: HttpRequest) -> HttpResponse:
    return render(request, "api/docs.html", docs_context())


docs.api_methods = ("GET",)  # type: ignore[attr-defined]  # for the tests that walk every API route
