"""Documents -> prompt strings, the way lm-evaluation-harness builds them.

``doc_to_text``/``doc_to_target``/``doc_to_choice`` are a column name, a Jinja
template (StrictUndefined, trailing newlines kept, a ``regex_replace`` filter),
a literal list, or an int. Templates come from users' task folders, so they are
rendered in Jinja's immutable sandbox: they read the document's fields and use
filters, but cannot reach Python internals (``__class__``, ``__globals__``...) or
call methods that change a value; lm-eval's own templates use neither, so they
render the same. The sandbox bounds what a template can reach, not how long it
runs: the process that renders (the evaluator, the upload's preview) bounds that. A few-shot prompt is the description, then each
example as ``text + target_delimiter + answer + fewshot_delimiter``, then the
question's text; examples come from a ``random.Random(seed)`` shared across the
task's documents in order, which is how lm-eval draws them, so the same seed
gives the same prompts in both.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import BaseLoader, StrictUndefined, TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from modelcore.evaluation.taskconfig import TaskConfig, TaskConfigError

Doc = dict[str, Any]

# lm-eval renders with a plain Environment(BaseLoader, StrictUndefined, keep_trailing_newline)
# and one extra filter; the sandbox keeps those settings and the same filters and globals.
_env = ImmutableSandboxedEnvironment(
    loader=BaseLoader(), undefined=StrictUndefined, keep_trailing_newline=True
)
_env.filters["regex_replace"] = lambda s, pattern, repl, count=0: re.sub(pattern, repl, s, count=count)
_template_cache: dict[str, Any] = {}


class TemplateSecurityError(TaskConfigError):
    """A task template that reached outside its document (refused by the sandbox)."""


def render(template: str, doc: Doc, key: str = "template") -> str:
    """``template`` rendered with ``doc``'s fields; any failure is a TaskConfigError starting with ``key``."""
    compiled = _template_cache.get(template)
    if compiled is None:
        try:
            compiled = _template_cache[template] = _env.from_string(template)
        except TemplateError as exc:
            raise TaskConfigError(f"{key}: bad Jinja template: {exc}") from exc
    try:
        return compiled.render(**doc)
    except SecurityError as exc:
        raise TemplateSecurityError(
            f"{key}: the template reaches outside the document ({exc}); task templates may read the "
            "document's fields and use Jinja filters, not Python attributes or methods that change values"
        ) from exc
    except TemplateError as exc:
        raise TaskConfigError(f"{key}: {exc} (document fields: {', '.join(doc)})") from exc
    except MemoryError as exc:
        raise TaskConfigError(f"{key}: the template builds a value too large for memory") from exc
    except Exception as exc:
        # e.g. "{{ choices.index(answer) }}" on a document without that answer, or a range over
        # the sandbox's limit: still this template's fault, so name the key rather than crash.
        raise TaskConfigError(f"{key}: {type(exc).__name__}: {exc}") from exc


class DocFormatter:
    """Applies one task's doc_to_* settings; ``features`` are the dataset's column names."""

    def __init__(self, cfg: TaskConfig, features: Sequence[str]):
        self.cfg = cfg
        self.features = set(features)

    def where(self, key: str, spec: Any = None) -> str:
        # The task's name as well as its file: a folder's tasks often share one base YAML.
        if spec is not None and spec != getattr(self.cfg, key):
            key = f"fewshot_config.{key}"  # an example rendered with the few-shot template
        return f"{self.cfg.source}: task {self.cfg.task}: {key}"

    def text(self, doc: Doc, spec: Any = None) -> str | int:
        spec = self.cfg.doc_to_text if spec is None else spec
        if isinstance(spec, int):
            return spec
        if spec in self.features:
            return doc[spec]
        out = render(spec, doc, self.where("doc_to_text", spec))
        if out.isdigit() and self.cfg.doc_to_choice is not None:
            return ast.literal_eval(out)
        return out

    def target(self, doc: Doc, spec: Any = None) -> str | int | list:
        spec = self.cfg.doc_to_target if spec is None else spec
        if isinstance(spec, int | list):
            return spec
        if spec in self.features:
            return doc[spec]
        out = render(spec, doc, self.where("doc_to_target", spec))
        if out.isdigit() and self.cfg.doc_to_choice is not None:
            return ast.literal_eval(out)
        if len(out) >= 2 and out[0] == "[" and out[-1] == "]":
            try:
                return ast.literal_eval(out)
            except (SyntaxError, ValueError):
                return out
        return out

    def choices(self, doc: Doc, spec: Any = None) -> list[str]:
        spec = self.cfg.doc_to_choice if spec is None else spec
        if isinstance(spec, list):
            return spec
        if isinstance(spec, dict):
            return list(spec.values())
        if spec in self.features:
            value = doc[spec]
        else:
            rendered = render(spec, doc, self.where("doc_to_choice", spec))
            try:
                value = ast.literal_eval(rendered)
            except (SyntaxError, ValueError) as exc:
                raise TaskConfigError(
                    f"{self.where('doc_to_choice', spec)}: must render to a Python list literal, got {rendered!r}"
                ) from exc
        if not isinstance(value, list | tuple) or not all(isinstance(c, str) for c in value):
            raise TaskConfigError(
                f"{self.where('doc_to_choice', spec)}: must give a list of strings, got {value!r}"
            )
        return list(value)


def maybe_delimit(prefix: str | None, suffix: str | None, delimiter: str = " ") -> str:
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix
    return prefix + suffix if prefix[-1].isspace() or suffix[0].isspace() else prefix + delimiter + suffix


class FewshotSampler:
    """Draws few-shot examples: ``default`` samples with a seeded RNG, ``first_n`` takes the first n."""

    def __init__(self, pool: list[Doc], kind: str, seed: int | None):
        self.pool = pool
        self.kind = kind
        self.rnd = random.Random(seed)

    def sample(self, n: int, exclude: Doc | None) -> list[Doc]:
        if n == 0:
            return []
        if self.kind == "first_n":
            pool = [d for d in self.pool if d != exclude] if exclude is not None else self.pool
            if n > len(pool):
                raise TaskConfigError(f"num_fewshot: {n} examples asked, the few-shot split has {len(pool)}")
            return pool[:n]
        if exclude is None:
            return self.rnd.sample(self.pool, n)
        picked = [d for d in self.rnd.sample(self.pool, n + 1) if d != exclude][:n]
        if len(picked) < n:
            # Duplicates of the question in the pool were drawn; draw again without any of them.
            picked = self.rnd.sample([d for d in self.pool if d != exclude], n)
        return picked


@dataclass
class PromptBuilder:
    cfg: TaskConfig
    fmt: DocFormatter
    sampler: FewshotSampler | None
    exclude_eval_doc: bool

    def _answer_text(self, doc: Doc) -> str | None:
        fs = self.cfg.fewshot_config
        answer = self.fmt.target(doc, fs.doc_to_target)
        choices = self.fmt.choices(doc, fs.doc_to_choice) if fs.doc_to_choice is not None else None
        if answer is None or answer == "":
            return None
        if choices and isinstance(answer, int):
            return choices[answer]
        if isinstance(answer, list):
            return answer[0]
        if not isinstance(answer, str):
            raise TaskConfigError(f"{self.cfg.source}: doc_to_target: few-shot answer {answer!r} is not text")
        return answer

    def context(self, doc: Doc, num_fewshot: int, multiple_input: bool) -> str | list[str]:
        """The prompt for ``doc`` (one per choice when ``doc_to_text`` picks among choices)."""
        fs = self.cfg.fewshot_config
        desc = self.cfg.description
        parts = (
            [doc[desc] if desc in doc else render(desc, doc, self.fmt.where("description"))] if desc else []
        )
        if num_fewshot > 0:
            if self.sampler is None:
                raise TaskConfigError(
                    f"{self.cfg.source}: num_fewshot: the task has no split to draw examples from"
                )
            for ex in self.sampler.sample(num_fewshot, doc if self.exclude_eval_doc else None):
                q = self.fmt.text(ex, fs.doc_to_text)
                if multiple_input:
                    q = self.fmt.choices(ex, fs.doc_to_choice)[q]
                answer = self._answer_text(ex)
                if answer is None:
                    parts.append(q)
                else:
                    parts.append(q + fs.target_delimiter + answer + fs.fewshot_delimiter)
        prefix = "".join(parts)
        if multiple_input:
            return [prefix + choice for choice in self.fmt.choices(doc)]
        q = self.fmt.text(doc)
        if not isinstance(q, str):
            raise TaskConfigError(f"{self.cfg.source}: doc_to_text: gave {q!r}, expected text")
        return prefix + q


def fewshot_pool(cfg: TaskConfig, splits: dict[str, list[Doc]]) -> tuple[list[Doc] | None, str | None]:
    """Where examples come from, with lm-eval's fallbacks: fewshot split, samples, train, validation, test."""
    split = cfg.fewshot_config.split
    if split is not None:
        if split not in splits:
            raise TaskConfigError(f"{cfg.source}: fewshot_split: split {split!r} not in the dataset")
        return splits[split], split
    if cfg.fewshot_config.samples is not None:
        return list(cfg.fewshot_config.samples), None
    for key in ("training_split", "validation_split", "test_split"):
        name = getattr(cfg, key)
        if name is not None:
            if name not in splits:
                raise TaskConfigError(f"{cfg.source}: {key}: split {name!r} not in the dataset")
            return splits[name], None
    return None, None
