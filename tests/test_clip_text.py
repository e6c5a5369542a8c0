"""CLIP text shorter than the model's context (DSPH's 32 tokens on ViT-B/32's 77 positions), shown on
clip_tiny (40 positions) with 16 tokens; and the retrieval loss by its paper name, DSAP."""

import pytest
import torch
from scored import compose_config
from test_fisher import assert_close, loop_fisher

from ppp.data.digits import digit_scenes
from ppp.errors import ConfigError
from ppp.fisher import loss_context, per_sample_fisher
from ppp.losses import LOSSES, DSAPLoss, DSPHLoss
from ppp.models import build_system
from ppp.models.clip_hashing import ClipHashingSystem, encode_text

CAPTIONS = ["one two three six", "a photo of zero and nine, eight seven six five four three two one zero"]


@pytest.fixture(scope="module")
def short():
    torch.manual_seed(0)
    return ClipHashingSystem("clip_tiny", bits=16, num_classes=10, context_length=16).eval()


def test_short_context_equals_the_full_context_padded(short):
    """Causal attention: the first 16 positions compute the same with or without the 24 after them."""
    tokens = short.tokenizer(CAPTIONS)
    assert tokens.shape == (2, 16) and short.net.clip.positional_embedding.shape[0] == 40
    padded = torch.cat([tokens, torch.zeros(2, 24, dtype=tokens.dtype)], dim=1)
    with torch.no_grad():
        assert torch.equal(encode_text(short.net.clip, tokens), short.net.clip.encode_text(padded))


def test_pretrained_weights_load_with_every_position(short, tmp_path):
    torch.save(short.net.clip.state_dict(), tmp_path / "clip.pt")
    loaded = ClipHashingSystem(
        "clip_tiny", bits=16, num_classes=10, pretrained=str(tmp_path / "clip.pt"), context_length=16
    ).eval()
    assert torch.equal(loaded.net.clip.positional_embedding, short.net.clip.positional_embedding)  # 40 rows
    tokens = short.tokenizer(CAPTIONS)
    with torch.no_grad():
        assert torch.equal(encode_text(loaded.net.clip, tokens), encode_text(short.net.clip, tokens))


def test_full_context_is_open_clips_own_encoding():
    torch.manual_seed(0)
    tiny = ClipHashingSystem("clip_tiny", bits=16, num_classes=10, context_length=40).eval()
    tokens = tiny.tokenizer(CAPTIONS)
    with torch.no_grad():
        assert torch.equal(tiny.net.encode_text(tokens), tiny.net.text_head(tiny.net.clip.encode_text(tokens)))


def test_per_sample_fisher_through_the_slice(short):
    data = digit_scenes(n_total=60, n_query=10, n_train=30, n_val=10, seed=0).train.subset(range(10))
    context = loss_context(short, data, "cpu")
    fisher = per_sample_fisher(short, data, "cpu", context, chunk=4)  # chunks share the one context
    assert_close(fisher, loop_fisher(short, data, context))
    positions = fisher["clip.positional_embedding"]
    assert positions[:16].sum() > 0 and positions[16:].abs().sum() == 0  # unused rows: no gradient


def test_context_longer_than_the_model_is_a_config_error():
    with pytest.raises(ConfigError, match="context_length=50: clip_tiny has 40 text positions"):
        ClipHashingSystem("clip_tiny", bits=16, num_classes=10, context_length=50)


def test_dsap_is_the_papers_name_for_dsph():
    assert DSAPLoss is DSPHLoss and LOSSES.get("dsap") is LOSSES.get("dsph") is DSPHLoss
    assert compose_config([]).backbone.loss.name == "dsap"
    for name in ("dsap", "dsph"):
        system = build_system(compose_config([f"backbone.loss.name={name}"]).backbone, 10, 16, seed=0)
        assert isinstance(system.criterion, DSAPLoss)
    with pytest.raises(ConfigError, match="^unknown backbone.loss.name 'dpsh'; valid choices: dsap, dsph$"):
        build_system(compose_config(["backbone.loss.name=dpsh"]).backbone, 10, 16, seed=0)


def test_remembered_token_rows_equal_fresh_ones_and_stay_within_capacity():
    import copy

    import open_clip

    from ppp.models.clip_hashing import TokenMemo

    raw = open_clip.get_tokenizer("clip_tiny", context_length=40)
    memo = TokenMemo(raw, capacity=3)
    texts = [CAPTIONS[0], "zero", CAPTIONS[0], "six and one", CAPTIONS[1]]
    assert torch.equal(memo(texts), raw(texts))  # duplicates, and more texts than the capacity, in one call
    assert list(memo.rows) == [CAPTIONS[0], "six and one", CAPTIONS[1]]  # the most recently used three
    assert torch.equal(memo(["zero", CAPTIONS[1]]), raw(["zero", CAPTIONS[1]]))  # "zero" tokenized again
    assert list(memo.rows) == ["six and one", "zero", CAPTIONS[1]]
    assert copy.deepcopy(memo) is memo
