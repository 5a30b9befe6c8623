"""A sweep's search spec: parsed strictly, every field path and value checked by the config schema.

``parameters`` maps a config field path to either a list of values (``{"values": [...]}``)
or a range (``{"min": a, "max": b, "scale": "linear" | "log"}``, random search only; ``log``
samples log-uniformly, the usual choice for learning rates). A grid is the product of the
value lists; a random search draws ``budget`` points from a seeded generator, so the same
spec gives the same trials.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modelcore.config import ConfigError, RunConfig, field_schema, resolve

METHODS = ("grid", "random")
SCALES = ("linear", "log")
GOALS = ("min", "max")
MAX_TRIALS = 500
MAX_VALUES = 100
RANGE_LIMIT = 1e15  # wider than any config field's bounds; keeps exp/log and int() finite
FIELDS = {meta["path"]: meta for section in field_schema() for meta in section["fields"]}


@dataclass(frozen=True)
class SearchSpec:
    method: str
    parameters: dict[str, dict[str, Any]]
    budget: int
    seed: int


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError({field: "must be a finite number"})
    return float(value)


def _parameter(path: Any, spec: Any, method: str) -> dict[str, Any]:
    field = f"parameters.{str(path)[:80]}"
    if not isinstance(path, str) or path not in FIELDS:
        raise ConfigError({field: "no such config field (e.g. optim.lr, model.n_layers)"})
    meta = FIELDS[path]
    if not isinstance(spec, Mapping):
        raise ConfigError({field: 'must be {"values": [...]} or {"min": a, "max": b, "scale": "log"}'})
    unknown = set(spec) - {"values", "min", "max", "scale"}
    if unknown:
        raise ConfigError({field: f"unknown key {sorted(map(str, unknown))[0][:40]!r}"})
    if "values" in spec:
        values = spec["values"]
        if set(spec) != {"values"}:
            raise ConfigError({field: "give either values or min/max, not both"})
        if not isinstance(values, list) or not values:
            raise ConfigError({field: "values must be a non-empty list"})
        if len(values) > MAX_VALUES:
            raise ConfigError({field: f"at most {MAX_VALUES} values"})
        return {"values": values}
    if method == "grid":
        raise ConfigError({field: "a grid search needs a list of values for each field"})
    if meta["type"] not in ("int", "float"):
        raise ConfigError({field: f"a range needs a numeric field; {path} is a {meta['type']}: give values"})
    if "min" not in spec or "max" not in spec:
        raise ConfigError({field: "a range needs both min and max"})
    low, high = _number(spec["min"], f"{field}.min"), _number(spec["max"], f"{field}.max")
    if max(abs(low), abs(high)) > RANGE_LIMIT:
        raise ConfigError({field: f"min and max must lie within ±{RANGE_LIMIT:g}"})
    if low > high:
        raise ConfigError({field: f"min ({low:g}) is above max ({high:g})"})
    scale = spec.get("scale", "linear")
    if scale not in SCALES:
        raise ConfigError({f"{field}.scale": f"must be one of {', '.join(SCALES)}"})
    if scale == "log" and low <= 0:
        raise ConfigError({f"{field}.min": "a log scale needs min > 0"})
    if meta["type"] == "int" and (not low.is_integer() or not high.is_integer()):
        raise ConfigError({field: f"{path} is a whole number: min and max must be whole"})
    return {"min": low, "max": high, "scale": scale}


def parse_spec(method: Any, parameters: Any, budget: Any, seed: Any = 0) -> SearchSpec:
    """Check the shape of a search; raises ``ConfigError`` keyed by the offending field."""
    if method not in METHODS:
        raise ConfigError({"method": f"must be one of {', '.join(METHODS)}"})
    if not isinstance(parameters, Mapping) or not parameters:
        raise ConfigError({"parameters": 'must be a non-empty object, e.g. {"optim.lr": {"values": [1e-3]}}'})
    if len(parameters) > 20:
        raise ConfigError({"parameters": "at most 20 fields"})
    parsed = {path: _parameter(path, spec, method) for path, spec in parameters.items()}
    if seed is None:
        seed = 0
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError({"seed": "must be a whole number from 0 to 2**32 - 1"})
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise ConfigError({"budget": "must be a whole number of runs, at least 1"})
    if method == "grid":
        size = math.prod(len(p["values"]) for p in parsed.values())
        budget = size if budget is None else min(budget, size)
    elif budget is None:
        raise ConfigError({"budget": "a random search needs a budget (how many runs)"})
    if budget > MAX_TRIALS:
        raise ConfigError({"budget": f"at most {MAX_TRIALS} runs per sweep (this search has {budget})"})
    return SearchSpec(method=method, parameters=parsed, budget=budget, seed=seed)


def _draw(rng: random.Random, kind: str, spec: dict[str, Any]) -> Any:
    if "values" in spec:
        return rng.choice(spec["values"])
    low, high = spec["min"], spec["max"]
    if kind == "int":
        if spec["scale"] == "log":
            return min(int(high), max(int(low), round(math.exp(rng.uniform(math.log(low), math.log(high))))))
        return rng.randint(int(low), int(high))
    if spec["scale"] == "log":
        return min(high, max(low, math.exp(rng.uniform(math.log(low), math.log(high)))))
    return rng.uniform(low, high)


def expand(spec: SearchSpec) -> list[dict[str, Any]]:
    """The trials, each ``{field path: value}``: the grid's first ``budget`` points, or random draws."""
    paths = list(spec.parameters)
    if spec.method == "grid":
        grid = itertools.product(*(spec.parameters[p]["values"] for p in paths))
        return [dict(zip(paths, point, strict=True)) for point in itertools.islice(grid, spec.budget)]
    rng = random.Random(spec.seed)
    return [{p: _draw(rng, FIELDS[p]["type"], spec.parameters[p]) for p in paths} for _ in range(spec.budget)]


def nested(trial: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"optim.lr": 1e-3}`` as the ``{"optim": {"lr": 1e-3}}`` overrides a run takes."""
    out: dict[str, dict[str, Any]] = {}
    for path, value in trial.items():
        section, _, name = path.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def overrides_for(base: Mapping[str, Any], trial: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The base overrides with the trial's fields laid over them."""
    out = {section: dict(fields) for section, fields in base.items()}
    for section, fields in nested(trial).items():
        out.setdefault(section, {}).update(fields)
    return out


def check_trials(
    preset: str | None,
    base: Mapping[str, Any],
    trials: list[dict[str, Any]],
    check: Callable[[RunConfig], None] = lambda config: None,
) -> None:
    """Validate every trial's whole config, then ``check`` it (what the run service checks beyond the
    schema: limits, paths the user may read); an error names the trial's field path and value."""
    for trial in trials:
        try:
            check(resolve(preset or None, overrides_for(base, trial)))
        except ConfigError as exc:
            errors = {}
            for path, message in exc.errors.items():
                key = f"parameters.{path}" if path in trial else f"config.{path}"
                shown = f" (with {path} = {trial[path]!r})" if path in trial else f" (in trial {trial!r})"
                errors[key] = f"{message}{shown}"[:500]
            raise ConfigError(errors) from None
