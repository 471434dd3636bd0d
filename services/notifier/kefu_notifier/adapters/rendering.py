"""Templates are files: ``templates/<language>/<template>.txt.j2`` with a subject and a body block.

Jinja2 with ``StrictUndefined``: a parameter the requester forgot is an error, never an empty
space in a message the customer reads. Plain text, so no HTML autoescaping.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from kefu_notifier.domain.delivery import Content
from kefu_notifier.domain.ports import TemplateError

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"


class JinjaRenderer:
    def __init__(self, directory: Path = TEMPLATE_DIR) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(directory),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # plain-text notices; HTML would need its own templates
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, template: str, language: str, parameters: Mapping[str, Any]) -> Content:
        name = f"{language}/{template}.txt.j2"
        try:
            compiled = self._env.get_template(name)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"unknown template {template!r} for language {language}") from exc
        if "subject" not in compiled.blocks or "body" not in compiled.blocks:
            raise TemplateError(f"template {name} needs a subject and a body block")
        try:
            context = compiled.new_context(dict(parameters))
            subject = "".join(compiled.blocks["subject"](context)).strip()
            body = "".join(compiled.blocks["body"](context)).strip()
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"template {template!r}: missing parameter ({exc.message})"
            ) from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {template!r}: {exc}") from exc
        return Content(subject=subject, body=body)

    def names(self, language: str) -> list[str]:
        suffix = ".txt.j2"
        return sorted(
            n[len(language) + 1 : -len(suffix)]
            for n in self._env.list_templates()
            if n.startswith(f"{language}/") and n.endswith(suffix)
        )
