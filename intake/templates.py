"""Document templates (Textbausteine): the wording of certificates and notices, per kind with
per-service overrides, loaded from YAML (intake/templates.yaml) and validated at start-up.

A template refuses to load when it names an unknown kind, an unknown service (checked against
the catalog), or a placeholder the kind does not provide: a typo in a template must stop the
worker at start, not print "{aplicant_name}" on a citizen's certificate.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from intake.catalog import Catalog

DEFAULT_TEMPLATES_PATH: Final = Path(__file__).resolve().parent / "templates.yaml"

KINDS: Final = ("certificate", "rejection", "nachforderung", "cancellation", "withdrawal")

_COMMON: Final = frozenset({"service_name", "aktenzeichen", "applicant_name", "authority", "department",
                            "issued_on", "fee"})
#: the placeholders each kind may use
PLACEHOLDERS: Final[dict[str, frozenset[str]]] = {
    "certificate": _COMMON,
    "rejection": _COMMON | {"reason"},
    "nachforderung": _COMMON | {"due_on", "items"},
    "cancellation": _COMMON | {"reason"},
    "withdrawal": _COMMON | {"reason"},
}


class TemplateError(ValueError):
    """The template file is invalid; the message says where and why."""


@dataclass(frozen=True)
class Template:
    title: str
    intro: tuple[str, ...] = ()
    closing: tuple[str, ...] = ()


@dataclass(frozen=True)
class FilledTemplate:
    """A template with its placeholders replaced: plain text (``**bold**`` kept for the renderer)."""

    title: str
    intro: tuple[str, ...]
    closing: tuple[str, ...]


class _TemplateModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    intro: list[str] = Field(default_factory=list, max_length=20)
    closing: list[str] = Field(default_factory=list, max_length=20)


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: dict[str, _TemplateModel]
    services: dict[str, dict[str, _TemplateModel]] = Field(default_factory=dict)


def placeholders_of(text: str) -> set[str]:
    """The placeholder names in ``text``; refuses attribute/index access, conversions and format
    specs (``{x.y}``, ``{x[0]}``, ``{x!r}``, ``{x:>10}``) and positional ``{}``."""
    names: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"bad braces in {text!r}: {exc} (write literal braces as {{{{ and }}}})") from exc
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                                f"{':' + spec if spec else ''}}} in {text!r} is not a plain name")
        names.add(name)
    return names


def _check(where: str, kind: str, t: _TemplateModel) -> Template:
    allowed = PLACEHOLDERS[kind]
    for text in (t.title, *t.intro, *t.closing):
        unknown = placeholders_of(text) - allowed
        if unknown:
            raise TemplateError(f"{where}: unknown placeholder(s) {', '.join('{' + u + '}' for u in sorted(unknown))} "
                                f"for kind {kind!r}; allowed: {', '.join(sorted(allowed))}")
    return Template(title=t.title, intro=tuple(t.intro), closing=tuple(t.closing))


@dataclass(frozen=True)
class Templates:
    defaults: dict[str, Template]
    overrides: dict[tuple[str, str], Template] = field(default_factory=dict)  # (service key, kind)

    def template(self, kind: str, service_key: str | None) -> Template:
        """The service's own template for ``kind``, else the default."""
        if kind not in self.defaults:
            raise KeyError(f"unknown document kind {kind!r}; expected one of {KINDS}")
        if service_key is not None and (service_key, kind) in self.overrides:
            return self.overrides[(service_key, kind)]
        return self.defaults[kind]

    def fill(self, kind: str, service_key: str | None, values: dict[str, str]) -> FilledTemplate:
        """The template for (kind, service) with its placeholders replaced by ``values``; a
        placeholder without a value is left empty. Values are inserted as text: braces in them
        are not interpreted (``str.format`` does not re-parse substituted values)."""
        t = self.template(kind, service_key)
        full = {name: "" for name in PLACEHOLDERS[kind]} | {k: v for k, v in values.items() if k in PLACEHOLDERS[kind]}

        def f(text: str) -> str:
            return text.format_map(full).strip()

        def paragraphs(texts: tuple[str, ...]) -> tuple[str, ...]:  # a paragraph that filled empty is left out
            return tuple(filled for filled in map(f, texts) if filled)

        return FilledTemplate(title=f(t.title), intro=paragraphs(t.intro), closing=paragraphs(t.closing))


def load_templates(path: Path = DEFAULT_TEMPLATES_PATH, catalog: Catalog | None = None) -> Templates:
    """Load and validate the templates; with a catalog, every overridden service must exist in it."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        model = _FileModel.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise TemplateError(f"document templates {path} are invalid: {exc}") from exc
    try:
        unknown = sorted(set(model.defaults) - set(KINDS))
        if unknown:
            raise TemplateError(f"defaults: unknown kind(s) {unknown}; expected {list(KINDS)}")
        missing = [k for k in KINDS if k not in model.defaults]
        if missing:
            raise TemplateError(f"defaults: no template for kind(s) {missing}: every kind needs a default")
        defaults = {k: _check(f"defaults.{k}", k, t) for k, t in model.defaults.items()}
        overrides: dict[tuple[str, str], Template] = {}
        for service_key, by_kind in model.services.items():
            if catalog is not None and catalog.service(service_key) is None:
                raise TemplateError(f"services.{service_key}: no such service in the catalog")
            for kind, t in by_kind.items():
                if kind not in KINDS:
                    raise TemplateError(f"services.{service_key}: unknown kind {kind!r}; expected one of {list(KINDS)}")
                overrides[(service_key, kind)] = _check(f"services.{service_key}.{kind}", kind, t)
    except TemplateError as exc:
        raise TemplateError(f"document templates {path} are invalid: {exc}") from exc
    return Templates(defaults=defaults, overrides=overrides)
