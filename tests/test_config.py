"""SegConfig field metadata: which stage reads each field (the cache keys) and the help texts (CLI flags)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from vidseg_nb import config as C
from vidseg_nb.cache import feature_key, stage_key
from vidseg_nb.config import ConfigError, SegConfig, field_help, field_stage, stage_fields

# the stage-key tuples as they were written out by hand before they were derived from the metadata
BEFORE_FEATURES = ("n_steps", "t_m", "guidance_scale", "seed", "max_side", "max_frames")
BEFORE_COARSE = BEFORE_FEATURES + (
    "aggregate", "batch_size", "n_clusters", "kmeans_n_init", "n_neighbors", "refine", "radius2",
)  # fmt: skip
BEFORE_DIFF = BEFORE_COARSE + (
    "modulation", "masked_modulation", "lam", "t_f", "blur_kernel", "blur_sigma", "diff_fp16",
)  # fmt: skip
BEFORE_FILTER = BEFORE_DIFF + ("s",)


def test_every_field_has_a_stage_and_a_help_text():
    for f in fields(SegConfig):
        assert f.metadata["stage"] in C.STAGES, f.name
        assert isinstance(f.metadata["help"], str) and 10 <= len(f.metadata["help"]) <= 100, f.name
        assert field_help(f.name) == f.metadata["help"] and field_stage(f.name) == f.metadata["stage"]
    assert "lambda" in field_help("lam") and "t_m" in field_help("t_m") and "K" in field_help("n_clusters")
    with pytest.raises(ConfigError, match="unknown SegConfig field"):
        field_help("lambda_")


def test_stage_fields_are_todays_tuples_and_cumulative():
    derived = [stage_fields(s) for s in ("features", "coarse", "diff", "filter")]
    # exactly the fields of the hand-written tuples; features and coarse also in the same order
    assert stage_fields("features") == BEFORE_FEATURES and stage_fields("coarse") == BEFORE_COARSE
    assert set(stage_fields("diff")) == set(BEFORE_DIFF) and len(stage_fields("diff")) == len(BEFORE_DIFF)
    assert set(stage_fields("filter")) == set(BEFORE_FILTER) and len(stage_fields("filter")) == len(
        BEFORE_FILTER
    )
    for earlier, later in zip(derived, derived[1:]):  # each stage reads everything the earlier ones read
        assert later[: len(earlier)] == earlier
    assert (C.FEATURE_FIELDS, C.COARSE_FIELDS, C.DIFF_FIELDS, C.FILTER_FIELDS) == tuple(derived)
    # every field is read by exactly one first stage; "run" fields by none of the cached stages
    run = stage_fields("run")
    assert set(run) == {"chunk_size", "preset", "extra"}
    assert set(run) | set(stage_fields("filter")) == {f.name for f in fields(SegConfig)}
    assert not set(run) & set(stage_fields("filter"))
    with pytest.raises(ConfigError, match="unknown stage"):
        stage_fields("modulation")


def test_cache_keys_change_with_exactly_the_fields_a_stage_reads():
    base = SegConfig()
    for name, other in [("s", 0.2), ("lam", 10.0), ("n_clusters", 5), ("t_m", 20), ("chunk_size", 8)]:
        c = base.replace(**{name: other})
        first = field_stage(name)
        for stage in ("features", "coarse", "diff", "filter"):
            reads = C.STAGES.index(stage) >= C.STAGES.index(first) and first != "run"
            assert (stage_key(c, stage) != stage_key(base, stage)) == reads, (name, stage)
    # B enters the feature key only for a backbone that denoises a batch jointly (SVD)
    b2 = base.replace(batch_size=2)
    assert feature_key(b2) == feature_key(base)
    assert feature_key(b2, joint_frames=True) != feature_key(base, joint_frames=True)
