"""The model catalog, read from YAML: a new model family is an entry in a file, not code.

Users edit the catalog, so it is checked strictly when loaded (unknown keys, unknown classes, bad
search spaces), with messages naming the file and the entry, instead of failing hours later inside
a training run. Global families (neuralforecast) learn across all series of a frequency group;
local families (statsforecast) fit each series alone. Every family produces intervals at
`schemas.INTERVAL_LEVELS`.

Libraries are imported inside the builders: importing neuralforecast costs 5–10 s and must not
slow down loading the definitions. Class names are checked against the libraries' source instead.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import inspect
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, model_validator

from forecasting_pipeline.schemas import INTERVAL_LEVELS

if TYPE_CHECKING:
    import optuna

GROUPS: tuple[str, ...] = ("subhourly", "hourly", "daily", "weekly", "monthly", "quarterly", "yearly")

BUNDLED_CATALOG = Path(__file__).with_name("model_catalog.yaml")

# The lookback of a neural family as a multiple of the horizon; not a constructor argument.
INPUT_SIZE_MULTIPLIER = "input_size_multiplier"

# Losses whose outputs are the median and the bounds at INTERVAL_LEVELS (`<name>-median`, ...).
_QUANTILE_LOSSES = ("MQLoss", "HuberMQLoss")
_LOSSES: dict[str, tuple[str, ...]] = {
    "neuralforecast": _QUANTILE_LOSSES,
    "statsforecast": ("native", "conformal"),
}
# Set by the builders from the run's shape (a catalog value would be silently overridden), or
# meaningless for the library.
_RESERVED: dict[str, frozenset[str]] = {
    "neuralforecast": frozenset(
        {
            "h",
            "input_size",
            "loss",
            "max_steps",
            "random_seed",
            "alias",
            "hist_exog_list",
            "futr_exog_list",
            "stat_exog_list",
        }
    ),
    "statsforecast": frozenset({"alias", "season_length", "prediction_intervals", INPUT_SIZE_MULTIPLIER}),
}
# Where each library lists its model classes (`__all__`), relative to the package folder.
_MODEL_LISTS = {"neuralforecast": "models/__init__.py", "statsforecast": "models.py"}
# Conformal intervals are scored on this many backtest windows of one horizon each.
CONFORMAL_WINDOWS = 2


class CatalogError(ValueError):
    """The catalog file cannot be read or breaks a rule; the message names the file and entry."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpace(_Strict):
    """One tunable hyperparameter, in the terms of Optuna's `trial.suggest_*`."""

    type: Literal["int", "float", "categorical"]
    low: StrictInt | StrictFloat | None = None
    high: StrictInt | StrictFloat | None = None
    step: StrictInt | StrictFloat | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpace:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
            if any(v is not None for v in (self.low, self.high, self.step)) or self.log:
                raise ValueError("a categorical parameter takes `choices` only, not low/high/step/log")
            odd = [c for c in self.choices if c is not None and not isinstance(c, bool | int | float | str)]
            if odd:
                raise ValueError(
                    f"categorical choices must be null, booleans, numbers or strings (Optuna stores "
                    f"them as such); got {odd}"
                )
            return self
        if self.choices is not None:
            raise ValueError(f"an {self.type} parameter takes low/high, not `choices`")
        if self.low is None or self.high is None:
            raise ValueError(f"an {self.type} parameter needs both `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.step is not None and not (self.type == "int" and self.step == 1):
            raise ValueError("Optuna cannot combine `log` with `step`")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be positive, got {self.step}")
        if self.type == "int":
            if not all(isinstance(v, int) for v in (self.low, self.high, self.step or 1)):
                raise ValueError("an int parameter needs integer low, high and step")
            if self.log and self.low < 1:
                raise ValueError("a log-scaled int parameter needs low >= 1")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scaled float parameter needs low > 0")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(name, self.choices)
        if self.type == "int":
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class Accepts(_Strict):
    """Inputs besides the target a family can use; the pipeline refuses to pass it others."""

    historical_exogenous: bool = False
    future_exogenous: bool = False
    static_features: bool = False


class FamilySpec(_Strict):
    """One model family: how to build it, what to tune, what it accepts, how it makes intervals."""

    name: str
    library: Literal["neuralforecast", "statsforecast"]
    model_class: str
    enabled: bool = True
    description: str = ""
    defaults: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, ParamSpace] = Field(default_factory=dict)
    accepts: Accepts = Field(default_factory=Accepts)
    loss: str

    @model_validator(mode="after")
    def _consistent(self) -> FamilySpec:
        allowed = _LOSSES[self.library]
        if self.loss not in allowed:
            raise ValueError(f"loss {self.loss!r} is not one of {list(allowed)} for {self.library}")
        known = _library_models(self.library)
        if known is not None and self.model_class not in known:
            raise ValueError(f"{self.library}.models has no class {self.model_class!r}")
        for where, keys in (("defaults", self.defaults), ("search_space", self.search_space)):
            reserved = sorted(_RESERVED[self.library].intersection(keys))
            if reserved:
                raise ValueError(f"{where} sets {reserved}, which a {self.library} family cannot set")
        if self.library == "statsforecast" and (
            self.accepts.historical_exogenous or self.accepts.static_features
        ):
            raise ValueError("statsforecast models take future exogenous regressors only")
        return self

    @property
    def scope(self) -> Literal["global", "local"]:
        """Global families train one model per group of series; local ones one per series."""
        return "global" if self.library == "neuralforecast" else "local"

    @property
    def point_column(self) -> str:
        """Quantile losses make the median the point forecast; statsforecast names it after the model."""
        return f"{self.name}-median" if self.loss in _QUANTILE_LOSSES else self.name


class GroupSpec(_Strict):
    """Horizon and data requirements of one frequency group (`GROUPS`)."""

    horizon: int = Field(gt=0)
    min_points: int = Field(gt=0)
    input_size_multiplier: int = Field(default=2, gt=0)
    local_history_seasons: int | None = Field(default=50, gt=0)


class PresetSpec(_Strict):
    """What a preset run tries and how long it may take (`presets` in the catalog YAML)."""

    description: str
    families: Literal["enabled", "all"] | list[str]
    trials: int = Field(ge=0)
    max_steps: int = Field(gt=0)
    n_windows: int = Field(ge=1)
    ensembles: bool = True
    time_budget_minutes: float = Field(gt=0)


class ModelCatalog(_Strict):
    families: dict[str, FamilySpec]
    frequency_groups: dict[str, GroupSpec]
    presets: dict[str, PresetSpec] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _name_from_key(cls, data: Any) -> Any:
        """The YAML key is the family's name, so writing it twice is not required."""
        if isinstance(data, dict) and isinstance(data.get("families"), dict):
            families = {
                key: {"name": key, **entry} if isinstance(entry, dict) else entry
                for key, entry in data["families"].items()
            }
            data = {**data, "families": families}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModelCatalog:
        for key, spec in self.families.items():
            if spec.name != key:
                raise ValueError(f"families.{key}: name {spec.name!r} differs from its key")
        missing = [g for g in GROUPS if g not in self.frequency_groups]
        unknown = sorted(set(self.frequency_groups) - set(GROUPS))
        if missing or unknown:
            raise ValueError(
                f"frequency_groups must be exactly {list(GROUPS)}; missing {missing}, unknown {unknown}"
            )
        conformal = sorted(name for name, spec in self.families.items() if spec.loss == "conformal")
        for name, group in self.frequency_groups.items():
            needed = CONFORMAL_WINDOWS * group.horizon + 1
            if conformal and group.min_points < needed:
                raise ValueError(
                    f"frequency_groups.{name}: min_points {group.min_points} is below "
                    f"{CONFORMAL_WINDOWS} × horizon + 1 = {needed}, which conformal intervals "
                    f"({', '.join(conformal)}) need"
                )
        return self

    def preset(self, name: str) -> PresetSpec:
        try:
            return self.presets[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; catalog has {sorted(self.presets)}") from None

    def preset_families(self, preset: PresetSpec) -> list[str]:
        """The family names a preset runs, checked against the catalog."""
        if preset.families == "all":
            return sorted(self.families)
        if preset.families == "enabled":
            return sorted(name for name, spec in self.families.items() if spec.enabled)
        return [self.family(name).name for name in preset.families]

    def family(self, name: str) -> FamilySpec:
        try:
            return self.families[name]
        except KeyError:
            raise ValueError(f"unknown model family {name!r}; catalog has {sorted(self.families)}") from None

    def neural(self, names: Sequence[str] | None = None) -> list[FamilySpec]:
        """The enabled neural families, or the neural ones among `names` (enabled or not)."""
        return self._of_library("neuralforecast", names)

    def local(self, names: Sequence[str] | None = None) -> list[FamilySpec]:
        """The enabled statistical families, or the statistical ones among `names` (enabled or not)."""
        return self._of_library("statsforecast", names)

    def _of_library(self, library: str, names: Sequence[str] | None) -> list[FamilySpec]:
        """One list of names serves both scopes (a run names families, not libraries); a typo still fails."""
        specs = self.families.values() if names is None else [self.family(name) for name in names]
        return [s for s in specs if s.library == library and (names is not None or s.enabled)]

    def group(self, name: str) -> GroupSpec:
        try:
            return self.frequency_groups[name]
        except KeyError:
            raise ValueError(f"unknown frequency group {name!r}; catalog has {list(GROUPS)}") from None

    def fingerprint(self) -> str:
        """Changes whenever what is trained, or how, could; descriptions, layout and comments do not."""
        content = self.model_dump(mode="json", exclude={"families": {"__all__": {"description"}}})
        return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class _CatalogLoader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-4` (no dot) as a string; users write learning rates that way."""


_CatalogLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_catalog(path: str | Path | None = None) -> ModelCatalog:
    """Read and check a catalog file; None reads the bundled one.

    The file is read on every call (it is small) and parsed again only when its text changed, so
    an edited catalog takes effect without a restart and an unchanged one costs no validation.
    """
    resolved = Path(path or BUNDLED_CATALOG).resolve()
    try:
        text = resolved.read_text(encoding="utf-8")
    except OSError as error:
        raise CatalogError(f"model catalog {resolved}: cannot read it: {error}") from None
    return _parse(resolved, text)


@functools.lru_cache(maxsize=16)
def _parse(path: Path, text: str) -> ModelCatalog:
    try:
        # A SafeLoader subclass: builds no arbitrary objects.
        raw = yaml.load(text, Loader=_CatalogLoader)  # noqa: S506
    except yaml.YAMLError as error:
        raise CatalogError(f"model catalog {path}: cannot parse it: {error}") from None
    if not isinstance(raw, dict):
        raise CatalogError(f"model catalog {path}: expected a mapping with `families` and `frequency_groups`")
    try:
        return ModelCatalog.model_validate(raw)
    except ValidationError as error:
        problems = "\n".join(
            f"  {'.'.join(str(part) for part in e['loc']) or '(top level)'}: {e['msg']}"
            for e in error.errors(include_url=False)
        )
        raise CatalogError(f"model catalog {path}: {error.error_count()} problem(s)\n{problems}") from None


@functools.cache
def _library_models(library: str) -> frozenset[str] | None:
    """Class names a library exports, read from its `__all__` without importing it.

    None when the source cannot be read (library absent, or shipped without source); the
    builders then report an unknown class instead of the loader.
    """
    spec = importlib.util.find_spec(library)
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))) / _MODEL_LISTS[library]
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return frozenset(ast.literal_eval(node.value))
    return None


def suggest_params(trial: optuna.Trial, spec: FamilySpec) -> dict[str, Any]:
    """One draw from the family's search space, each parameter under its catalog name."""
    return {name: space.suggest(trial, name) for name, space in spec.search_space.items()}


def neural_params(spec: FamilySpec, tuned: Mapping[str, Any] | None) -> dict[str, Any]:
    """The family's defaults overlaid by tuned values: what a model is built with, and recorded.

    Works for statistical families as well; the builders apply the same overlay themselves.
    """
    return {**spec.defaults, **(tuned or {})}


@dataclass(frozen=True)
class NeuralShape:
    """What a run decides for a neural model, as opposed to what the catalog does."""

    horizon: int
    input_size: int  # used unless the params carry `input_size_multiplier`
    max_steps: int
    seed: int
    trainer_kwargs: dict[str, Any]  # Lightning Trainer arguments: accelerator, devices, precision…
    hist_exog: tuple[str, ...] = ()
    futr_exog: tuple[str, ...] = ()
    stat_exog: tuple[str, ...] = ()
    val_check_steps: int | None = None
    early_stop_patience_steps: int = -1


# Quiet training: no progress bars, summaries, checkpoints or logs in the pipeline's output.
_QUIET_TRAINER = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "logger": False,
}


def build_neural_model(spec: FamilySpec, params: Mapping[str, Any], shape: NeuralShape) -> Any:
    """A neuralforecast model producing `<name>-median` and bounds at INTERVAL_LEVELS.

    `params` are tuned values (the family's defaults fill the rest). Drivers the family does not
    accept are refused rather than dropped, so a model never silently ignores inputs it was given.
    """
    _require_library(spec, "neuralforecast")
    _refuse_unaccepted_exogenous(spec, shape)
    from neuralforecast import models
    from neuralforecast.losses import pytorch as losses

    model_class = _model_class(spec, models)
    kwargs = neural_params(spec, params)
    multiplier = kwargs.pop(INPUT_SIZE_MULTIPLIER, None)
    input_size = int(multiplier) * shape.horizon if multiplier is not None else shape.input_size
    arguments = _constructor_arguments(model_class)
    _refuse_unknown(spec, kwargs, arguments)
    for argument, value in (("scaler_type", "robust"), ("start_padding_enabled", True)):
        if argument in arguments:
            kwargs.setdefault(argument, value)
    if "patch_len" in arguments:
        _fit_patches(kwargs, arguments, input_size)
    for argument, columns in (
        ("hist_exog_list", shape.hist_exog),
        ("futr_exog_list", shape.futr_exog),
        ("stat_exog_list", shape.stat_exog),
    ):
        if columns:
            kwargs[argument] = list(columns)
    if shape.val_check_steps is not None:
        kwargs["val_check_steps"] = shape.val_check_steps
    if shape.early_stop_patience_steps != -1:
        kwargs["early_stop_patience_steps"] = shape.early_stop_patience_steps
    loss = getattr(losses, spec.loss)(level=list(INTERVAL_LEVELS))
    return model_class(
        h=shape.horizon,
        input_size=input_size,
        loss=loss,
        max_steps=shape.max_steps,
        random_seed=shape.seed,
        alias=spec.name,
        **kwargs,
        **{**_QUIET_TRAINER, **shape.trainer_kwargs},
    )


def build_local_model(
    spec: FamilySpec, params: Mapping[str, Any], season_length: int, horizon: int, *, intervals: bool = True
) -> Any:
    """A statsforecast model whose forecast has `<name>` and bounds at INTERVAL_LEVELS.

    `params` are tuned values (the family's defaults fill the rest). Families without intervals
    of their own get conformal ones, scored on the last windows of each series, unless
    `intervals` is False (a backtest fold too short for them: the folds calibrate intervals).
    """
    _require_library(spec, "statsforecast")
    from statsforecast import models
    from statsforecast.utils import ConformalIntervals

    model_class = _model_class(spec, models)
    kwargs = neural_params(spec, params)
    arguments = _constructor_arguments(model_class)
    _refuse_unknown(spec, kwargs, arguments)
    if "season_length" in arguments:
        kwargs["season_length"] = season_length
    if spec.loss == "conformal" and intervals:
        kwargs["prediction_intervals"] = ConformalIntervals(h=horizon, n_windows=CONFORMAL_WINDOWS)
    return model_class(alias=spec.name, **kwargs)


def _require_library(spec: FamilySpec, library: str) -> None:
    if spec.library != library:
        raise ValueError(f"{spec.name} is a {spec.library} family, not a {library} one")


def _refuse_unaccepted_exogenous(spec: FamilySpec, shape: NeuralShape) -> None:
    requested = {
        "historical_exogenous": shape.hist_exog,
        "future_exogenous": shape.futr_exog,
        "static_features": shape.stat_exog,
    }
    refused = {
        kind: list(cols) for kind, cols in requested.items() if cols and not getattr(spec.accepts, kind)
    }
    if refused:
        raise ValueError(
            f"{spec.name} does not accept {', '.join(refused)} (asked for {refused}); "
            f"its catalog entry accepts {spec.accepts.model_dump()}"
        )


def _model_class(spec: FamilySpec, module: Any) -> type:
    try:
        return getattr(module, spec.model_class)
    except AttributeError:
        raise ValueError(f"{spec.name}: {spec.library}.models has no class {spec.model_class!r}") from None


def _constructor_arguments(model_class: type) -> dict[str, inspect.Parameter]:
    """Named constructor arguments; neuralforecast sends any other keyword to the Lightning Trainer."""
    return {
        name: parameter
        for name, parameter in inspect.signature(model_class.__init__).parameters.items()
        if name != "self" and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    }


def _refuse_unknown(spec: FamilySpec, kwargs: Mapping[str, Any], arguments: Mapping[str, Any]) -> None:
    unknown = sorted(set(kwargs) - set(arguments))
    if unknown:
        raise ValueError(
            f"{spec.name}: {spec.library}.models.{spec.model_class} takes no argument(s) {unknown} "
            f"(from the catalog defaults or tuned parameters)"
        )


def _fit_patches(kwargs: dict[str, Any], arguments: Mapping[str, inspect.Parameter], input_size: int) -> None:
    """Patch models need patches no longer than the lookback; tuning can shorten the lookback."""
    patch_len = min(int(kwargs.get("patch_len", arguments["patch_len"].default)), input_size)
    kwargs["patch_len"] = patch_len
    if "stride" in arguments:
        kwargs["stride"] = min(int(kwargs.get("stride", arguments["stride"].default)), patch_len)
