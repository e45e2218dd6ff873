"""Typed configuration: the one place where every knob and its default is defined.

``params.yaml`` is loaded once at the edge (a stage's entry point or the command line),
validated here and passed around as frozen objects. The shipped ``params.yaml`` is exactly
:func:`nightlab.config.writer.params_yaml` of the defaults (a test keeps them equal), so defaults
live in :mod:`nightlab.config.schema` alone; profiles in ``profiles/`` are overlays that name only
what they change. By concern:

* :mod:`~nightlab.config.schema`: the sections, their fields, defaults and ranges;
* :mod:`~nightlab.config.rows`: the ``source/split/domain`` selector grammar of ``splits``;
* :mod:`~nightlab.config.load`: reading a file, and every mistake as one message;
* :mod:`~nightlab.config.view`: the declared-keys view a stage reads through;
* :mod:`~nightlab.config.writer`: params.yaml written out (command line only, not re-exported).
"""
from nightlab.config.load import load_params, load_profile, merge_overlay, parse_params, read_params_file
from nightlab.config.rows import RowSelector, selectors, shared_rows
from nightlab.config.schema import (
    REAL_KINDS,
    SYNTHETIC,
    BoxesConfig,
    DataConfig,
    DistributedConfig,
    EvaluationConfig,
    HardClassesConfig,
    HdmConfig,
    ImageModelConfig,
    ImageTrainConfig,
    MergeConfig,
    OrchestrationConfig,
    Params,
    RdnConfig,
    RdnTrainConfig,
    RegionModelConfig,
    RegionTrainConfig,
    SegModelConfig,
    SourceConfig,
    SplitsConfig,
    SyntheticConfig,
    TrainBase,
)
from nightlab.config.view import ParamsView, UndeclaredParam
from nightlab.errors import ConfigError

__all__ = ["REAL_KINDS", "SYNTHETIC", "BoxesConfig", "ConfigError", "DataConfig", "DistributedConfig",
           "EvaluationConfig", "HardClassesConfig", "HdmConfig", "ImageModelConfig", "ImageTrainConfig",
           "MergeConfig", "OrchestrationConfig", "Params", "ParamsView", "RdnConfig", "RdnTrainConfig",
           "RegionModelConfig", "RegionTrainConfig", "RowSelector", "SegModelConfig", "SourceConfig",
           "SplitsConfig", "SyntheticConfig", "TrainBase", "UndeclaredParam", "load_params", "load_profile",
           "merge_overlay", "parse_params", "read_params_file", "selectors", "shared_rows"]
