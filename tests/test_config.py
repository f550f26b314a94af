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
# issue 15's switches (the authors' code), appended after the fields above, one stage each
ISSUE15 = {
    "features": ("vae_sample", "batch_noise", "shifted_last_batch"),
    "coarse": ("knn_first_frame", "gt_merge", "authors_cbr"),
    "diff": ("blend_two_steps", "uint8_diff", "resize_decoded"),
    "filter": ("lanczos_filter",),
}


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
    # exactly the fields of the hand-written tuples (plus issue 15's); features and coarse in the same order
    feats = BEFORE_FEATURES + ISSUE15["features"]
    assert stage_fields("features") == feats
    assert stage_fields("coarse") == feats + BEFORE_COARSE[len(BEFORE_FEATURES) :] + ISSUE15["coarse"]
    new = set(sum(ISSUE15.values(), ()))
    diff, filt = set(BEFORE_DIFF) | new - set(ISSUE15["filter"]), set(BEFORE_FILTER) | new
    assert set(stage_fields("diff")) == diff and len(stage_fields("diff")) == len(diff)
    assert set(stage_fields("filter")) == filt and len(stage_fields("filter")) == len(filt)
    for earlier, later in zip(derived, derived[1:]):  # each stage reads everything the earlier ones read
        assert later[: len(earlier)] == earlier
    assert (C.FEATURE_FIELDS, C.COARSE_FIELDS, C.DIFF_FIELDS, C.FILTER_FIELDS) == tuple(derived)
    # every field is read by exactly one first stage; "run" fields by none of the cached stages
    run = stage_fields("run")
    # issue 12's stage-3 work reuse changes no stage's output (same labels), so it keys no cache
    reuse = {
        "reuse_prefix",
        "skip_qk_projections",
        "shared_attention",
        "shared_attention_cpu",
        "one_key_attention",
    }
    assert set(run) == {"chunk_size", "preset", "extra", "keep_qk", "keep_qk_budget_gb"} | reuse
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
