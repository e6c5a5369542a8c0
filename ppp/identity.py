"""What never changes a result, and the versions of what code computes: the one place for both.

Run hashes (`ppp.runs.run_hash`), cache keys (`ppp.cache.config_identity`) and Hydra's sweep folder names
(`hydra.job.config.override_dirname.exclude_keys` in ppp/conf/config.yaml, checked against
`SWEEP_FOLDER_NEUTRAL` by tests/test_identity.py) all read their exclusions from here, so that a key that
cannot change the numbers is declared once. The artefact versions live here too: bump one when code changes
what a cached artefact would be. Code reads them at call time (`identity.TRAINING_VERSION`), so a test can
monkeypatch them here.

Changing any value below changes run hashes or cache keys: finished runs would run again and caches rebuild.
"""

from __future__ import annotations

from typing import Any

from ppp.config import load_block

# ------------------------------------------------------------------ run hashes

# Top-level keys that decide where things go or how fast they run, never what the numbers are.
NOT_IN_RUN_HASH = ("out_dir", "cache_dir", "data_root", "num_workers", "run_index", "skip_finished", "save_model")

# Nested keys (dotted paths) left out of run hashes: where the data lives.
RUN_HASH_NEVER_KEYED = frozenset({"dataset.root"})

# ------------------------------------------------------------------ sweep folder names

# Keys left out of a sweep run's folder name (`${hydra.job.override_dirname}`): everything left out of the
# run hash, plus `device`, the machine a sweep ran on (it is in the run hash, since the numbers of a CPU and
# a GPU run differ in the last digits, but it is no part of what was swept; metrics.json records it). The
# folder name says what was swept; `scripts/check_run_hashes.py` recomposes a run from it.
SWEEP_FOLDER_NEUTRAL = (*NOT_IN_RUN_HASH, *sorted(RUN_HASH_NEVER_KEYED), "device")

# ------------------------------------------------------------------ cache keys

# Config keys (dotted paths) added after caches or runs existed, with the value that means "the behaviour
# from before the key existed". While a key holds that value it is left out of every key built by
# `ppp.cache.config_identity` and of run hashes, so adding it neither invalidates existing caches nor makes
# finished runs look new; any other value is keyed. When you add a config key, add it here with its neutral
# default.
NEUTRAL_DEFAULTS: dict[str, Any] = {
    "forget_set": load_block("forget_set/classes.yaml"),
    "dataset.surface_forms": False,
    "dataset.mention_prob": 1.0,
    "dataset.domains": None,
    "dataset.contributors": 0,
    "dataset.held_out_contributors": 0,
    "dataset.hand_colour_prob": 0.8,
    "dataset.hand_glyph_share": 0.3,
    "backbone.loss.contrastive_weight": 0.0,
    "backbone.train.fused_optimizer": False,
    "evaluator.residual": False,
    "evaluator.zeroshot": False,
    "evaluator.audit": load_block("audit/membership.yaml"),
    # the held-out prompts and the methods' (issue 21): a changed default block keeps every run hash
    "evaluator.zeroshot_settings": {
        **load_block("prompts/digits_eval.yaml", "zeroshot/default.yaml"),
        "method_prompts": load_block("prompts/digits.yaml"),
    },
    "evaluator.relearn": False,
    "evaluator.relearn_settings": load_block("audit/relearn.yaml"),
    "evaluator.distance": False,
    "evaluator.index": False,
    "evaluator.example_statistics": False,
    "evaluator.index_topk": 10,
    "evaluator.distance_settings": load_block("audit/distance.yaml"),
    "method.gamma": None,
    "method.sign_flip": True,
    "method.item_prototype": "forget_mean",
    "method.neighbours": "prototype",
    "method.fisher_memory_mb": None,
}

# Keys inside hashed config sections that never change a cached artefact (run hashes keep them).
NEVER_KEYED = frozenset(
    {
        "dataset.forget",  # the original model never depends on it; Retrain keys its forget classes itself
        "dataset.skip_bad_images",  # only decides between a placeholder and an error: both never build an artefact
    }
)

# ------------------------------------------------------------------ artefact versions

# Bump when a code change alters what a cached artefact would be: training (ppp/train.py, the systems and
# their losses) for models (the membership audit's reference models included); the estimator or a per-sample
# loss (ppp/fisher.py, a system's loss_context / sample_loss) for Fisher diagonals; ppp/methods/prototypes.py
# for prototypes; the codes' encoder for the served index's Original codes.
TRAINING_VERSION = 1
# 2: per-sample losses see one fixed context batch, not their chunk; 3: batch mode differentiates
# `system.fisher_loss` (the hashing loss alone on a contrastive CLIP backbone; unchanged elsewhere), and the
# key names the Fisher's kind (empirical, or Golatkar's predictive)
FISHER_VERSION = 3
PROTOTYPE_VERSION = 1
INDEX_VERSION = 1  # bump when ppp.evaluation.retrieval.encode changes the Original's cached index codes
# Bump when a reference row's metrics would change without a change to ppp.experiment.EVALUATION_SOURCES (a
# library's behaviour, code elsewhere that the evaluators call).
REFERENCE_METRICS_VERSION = 1
# 2: digit data version 2 (issue 21: glyph pools disjoint per split, per-pair captions, digits' population split)
DATASET_VERSION = 2  # bump when an embedded builder (ppp.data.EMBEDDED) changes what it builds
ANNOTATIONS_VERSION = 1  # bump when a reader changes what it keeps of its annotation files (ppp/data/files.py)

# ------------------------------------------------------------------ reference methods

# The reference rows of every table, in table order: evaluated beside every other method (|delta| to them),
# never beside themselves.
REFERENCE_METHODS = ("original", "bad", "retrain")
