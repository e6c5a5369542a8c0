"""CLIP cross-modal hashing (DSPH): an open_clip model with one hash head per modality, trained with
DSAP (DSPH's loss)."""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ppp.errors import ConfigError
from ppp.losses import LOSSES
from ppp.models.base import System, normalised_tensor_image
from ppp.models.clip_space import similarity_logits
from ppp.utils import reachable

CONFIG_DIR = Path(__file__).parent / "model_configs"
_registered = False


def _register_local_configs() -> None:
    """Make the package's JSON architectures (clip_tiny, ...) known to open_clip, once."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


class TokenMemo:
    """A tokenizer that remembers the token rows of the captions it has seen (the most recent `capacity`).
    Training tokenizes every caption again each epoch: on digit_scenes 0.27 s an epoch, about 11 s of clip_tiny's
    40-epoch training (`scripts/optimizer_step_probe.py`). A row depends on its caption alone (padded to the
    context length), so a remembered row equals a fresh one. Shared, not copied, by deep copies of a system."""

    def __init__(self, tokenize, capacity: int = 1 << 17):
        self.tokenize, self.capacity, self.rows = tokenize, capacity, OrderedDict()

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.rows]
        if missing:
            self.rows.update(zip(missing, self.tokenize(missing)))
        out = torch.stack([self.rows[t] for t in texts])
        for t in texts:
            self.rows.move_to_end(t)
        while len(self.rows) > self.capacity:
            self.rows.popitem(last=False)
        return out

    def __deepcopy__(self, memo):
        return self


@functools.cache
def tokenizer(arch: str, context_length: int | None) -> TokenMemo:
    """open_clip's tokenizer of `arch`, built once per process (about 0.2 s each; a run builds 3-4 systems),
    remembering the captions it has tokenized."""
    import open_clip

    return TokenMemo(open_clip.get_tokenizer(arch, context_length=context_length))


class HashHead(nn.Sequential):
    """embedding -> Linear(embed_dim, bits) -> Dropout -> tanh; retrieval codes are sign() of it."""

    def __init__(self, embed_dim: int, bits: int, dropout: float):
        super().__init__(nn.Linear(embed_dim, bits), nn.Dropout(dropout), nn.Tanh())


class _TextForward(nn.Module):
    """`clip.encode_text` as a forward, so that functional_call can stand sliced tensors in for the clip's own."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)


def encode_text(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's text encoding of token rows that may be shorter than the model's context.

    DSPH tokenises to 32 tokens for a 77-position CLIP: the first 32 rows of the positional embedding
    and a 32 x 32 causal mask are used. The parameter keeps all its rows (pretrained weights load as
    they are); the slice is taken at each call, so gradients reach the rows in use. Causal attention
    makes this exactly what the first positions of the full context would compute.
    """
    length = tokens.shape[-1]
    if length == clip.positional_embedding.shape[0]:
        return clip.encode_text(tokens)
    sliced = {"clip.positional_embedding": clip.positional_embedding[:length]}
    if clip.attn_mask is not None:
        sliced["clip.attn_mask"] = clip.attn_mask[:length, :length]
    return functional_call(_TextForward(clip), sliced, (tokens,), strict=False)


class ClipHashNet(nn.Module):
    def __init__(self, clip: nn.Module, embed_dim: int, bits: int, dropout: float):
        super().__init__()
        self.clip = clip
        self.image_head = HashHead(embed_dim, bits, dropout)
        self.text_head = HashHead(embed_dim, bits, dropout)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.clip.encode_image(images))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_head(encode_text(self.clip, tokens))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(tokens)

    def embeddings(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The towers' outputs before the hash heads: CLIP's own (unnormalised) embedding space."""
        return self.clip.encode_image(images), encode_text(self.clip, tokens)


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over a batch of pairs: cross-entropy of the scaled cosine logits, pair i
    the target of row i, averaged over both directions."""
    logits = similarity_logits(img, txt, scale)
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _cached_tag_weights(tag_cfg: dict) -> str | None:
    """The already-downloaded weights file of an open_clip pretrained tag, found without any network call."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    if tag_cfg.get("file"):
        return tag_cfg["file"]
    if tag_cfg.get("hf_hub"):  # open_clip prefers the HF Hub copy when a tag has one
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        safe = HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else os.path.splitext(filename)[0] + ".safetensors"
        found = [try_to_load_from_cache(repo, name) for name in (safe, filename)]
        return next((f for f in found if isinstance(f, str)), None)
    url_copy = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(tag_cfg.get("url", "")))
    return url_copy if tag_cfg.get("url") and os.path.isfile(url_copy) else None


def _tag_weights(arch: str, tag: str, tag_cfg: dict) -> str:
    """Local weights file of a pretrained tag: the cached copy, else a download; offline, a ConfigError at once.

    Without this check open_clip would wait on the Hub for tens of seconds before failing.
    """
    import open_clip

    cached = _cached_tag_weights(tag_cfg)
    if cached:
        return cached
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import constants

        source = constants.ENDPOINT
    else:
        source = tag_cfg.get("url", "")
    if not _hf_offline() and reachable(source):
        try:
            return open_clip.download_pretrained(tag_cfg)
        except Exception as err:  # network and Hub errors come in many types
            raise ConfigError(f"backbone.pretrained={tag}: downloading the {arch} weights failed: {err}") from None
    reason = "HF_HUB_OFFLINE is set" if _hf_offline() else f"{source} is unreachable"
    quick_gelu = (
        f" with backbone.arch={arch}-quickgelu" if tag_cfg.get("quick_gelu") and "quickgelu" not in arch else ""
    )
    raise ConfigError(
        f"backbone.pretrained={tag}: the {arch} weights are not in the local cache and {reason}; download them "
        f"once with network (python -c \"import open_clip; open_clip.create_model('{arch}', pretrained='{tag}')\") "
        f"and copy ~/.cache/huggingface, or give a local file: backbone.pretrained=/path/to/open_clip_model.safetensors"
        f"{quick_gelu} (or backbone.arch=local-dir:/folder)"
    )


def create_clip(arch: str, pretrained: str | None) -> tuple[nn.Module, int, int, tuple, tuple]:
    """open_clip model, its embed dim, image size and normalisation.

    `pretrained`: null (random init), a local checkpoint file, or an open_clip tag (`openai`, ...) whose
    weights come from the local cache or a download. A tag's QuickGELU and preprocessing settings are
    applied (open_clip only warns about a QuickGELU mismatch); a local file of OpenAI weights needs the
    `-quickgelu` arch. `local-dir:` and `hf-hub:` archs bring their own weights; `pretrained` is ignored.
    """
    import open_clip

    _register_local_configs()
    options: dict = {}
    if arch.startswith(("local-dir:", "hf-hub:")):
        folder = arch[len("local-dir:") :]
        if arch.startswith("local-dir:") and not os.path.isfile(os.path.join(folder, "open_clip_config.json")):
            raise ConfigError(
                f"backbone.arch={arch}: expected a folder holding open_clip_config.json and "
                f"open_clip_model.safetensors (or open_clip_pytorch_model.bin)"
            )
        weights = None
    elif arch not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip architecture '{arch}'")
    elif not pretrained:
        weights = None
    elif os.path.isfile(str(pretrained)):
        weights = str(pretrained)
    elif open_clip.get_pretrained_cfg(arch, pretrained):
        tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
        weights = _tag_weights(arch, pretrained, tag_cfg)
        options = {
            "force_quick_gelu": bool(tag_cfg.get("quick_gelu")),
            "force_preprocess_cfg": {
                k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg
            },
        }
    else:
        raise ConfigError(
            f"backbone.pretrained='{pretrained}' is neither a local file nor an open_clip tag for {arch}; "
            f"tags: {', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'}"
        )
    try:
        clip = open_clip.create_model(arch, pretrained=weights, **options)
    except (RuntimeError, OSError, ValueError) as err:  # a checkpoint of another arch, an unreadable file, ...
        raise ConfigError(f"backbone: cannot build {arch} from {weights or arch}: {err}") from None
    cfg = open_clip.get_model_config(arch) or {}
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = getattr(clip.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(clip.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    return clip, cfg.get("embed_dim", clip.text_projection.shape[-1]), int(size), tuple(mean), tuple(std)


def check_context_length(clip: nn.Module, arch: str, context_length: int | None) -> None:
    """A text context longer than the model's positions cannot be encoded; a shorter one needs
    open_clip's own text tower (its positional embedding is sliced, see `encode_text`)."""
    if context_length is None:
        return
    positions = getattr(clip, "positional_embedding", None)
    if positions is None:
        raise ConfigError(
            f"backbone.context_length={context_length}: {arch} has no open_clip text tower with a "
            f"positional embedding to slice; set backbone.context_length=null"
        )
    if not 0 < context_length <= len(positions):
        raise ConfigError(
            f"backbone.context_length={context_length}: {arch} has {len(positions)} text positions; "
            f"use 1 to {len(positions)}"
        )


class ClipHashingSystem(System):
    task = "retrieval"

    def __init__(
        self,
        arch: str,
        bits: int,
        num_classes: int,
        pretrained: str | None = None,
        dropout: float = 0.2,
        delta: float | None = None,
        irrelevant_weight: float = 0.8,
        proxy_seed: int = 0,
        context_length: int | None = None,
        loss: str = "dsap",
        contrastive_weight: float = 0.0,
    ):
        super().__init__()
        clip, embed_dim, self.image_size, self.mean, self.std = create_clip(arch, pretrained)
        check_context_length(clip, arch, context_length)
        self.net = ClipHashNet(clip, embed_dim, bits, dropout)
        self.criterion = LOSSES.get(loss)(num_classes, bits, delta, irrelevant_weight, proxy_seed)
        self.tokenizer = tokenizer(arch, context_length)
        self._preprocess = None
        self._arch, self._pretrained = arch, pretrained
        self.contrastive_weight = contrastive_weight

    def transform(self, image) -> torch.Tensor:
        if isinstance(image, torch.Tensor):  # uint8 (3, H, W) from the embedded datasets
            return normalised_tensor_image(image, self.image_size, self.mean, self.std)
        if self._preprocess is None:  # PIL images from the real datasets
            import open_clip

            self._preprocess = open_clip.image_transform(self.image_size, is_train=False, mean=self.mean, std=self.std)
        return self._preprocess(image)

    def collate(self, items):
        images, texts, labels = zip(*items)
        return {"image": torch.stack(images), "text": self.tokenizer(list(texts)), "label": torch.stack(labels).float()}

    def codes(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(batch["image"], batch["text"])

    def loss(self, batch):
        """The hashing loss; with `contrastive_weight`, plus that weight times CLIP's InfoNCE on the towers'
        outputs (scaled by the model's own learnt logit scale), which aligns CLIP's space for zero-shot use."""
        if not self.contrastive_weight:
            img, txt = self.codes(batch)
            return self.criterion(img, txt, batch["label"])
        emb_img, emb_txt = self.net.embeddings(batch["image"], batch["text"])
        hashing = self.criterion(self.net.image_head(emb_img), self.net.text_head(emb_txt), batch["label"])
        scale = self.net.clip.logit_scale.exp().clamp(max=100)
        return hashing + self.contrastive_weight * contrastive_loss(emb_img, emb_txt, scale)

    def fisher_loss(self, batch):
        """The hashing (DSPH) loss alone, what `sample_loss` measures per sample: both Fisher modes leave out
        the contrastive term (with contrastive_weight 0, exactly `loss`)."""
        img, txt = self.codes(batch)
        return self.criterion(img, txt, batch["label"])

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings in CLIP's own space (before the hash head) of transformed images."""
        return F.normalize(self.net.clip.encode_image(images), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings in CLIP's own space (before the hash head)."""
        device = self.net.clip.logit_scale.device
        return F.normalize(encode_text(self.net.clip, self.tokenizer(list(texts)).to(device)), dim=-1)

    @torch.no_grad()
    def loss_context(self, batch):
        """Codes and labels of a context batch: the partners of a sample's irrelevant-pair terms. Fisher
        draws one such batch from the whole training set, so every sample is measured against the same one."""
        img, txt = self.codes(batch)
        return {"img": img, "txt": txt, "label": batch["label"]}

    def net_inputs(self, batch):
        return batch["image"], batch["text"]

    def sample_loss(self, net_forward, sample, context):
        """The DSPH loss of one sample against the (constant) `context` from `loss_context`."""
        img, txt = net_forward(sample["image"][None], sample["text"][None])
        return self.criterion.sample_loss(
            img[0], txt[0], sample["label"], context["img"], context["txt"], context["label"]
        )

    def parameter_group(self, name: str) -> tuple[str, str]:
        """Image tower: `clip.visual` and the image hash head; text tower: the token table, every other
        CLIP parameter (positional embedding, transformer, ln_final, text projection, the logit scale,
        used only by the contrastive term) and the text hash head. Modules: token_table, text_tower, image_tower, heads."""
        if name.startswith(("image_head.", "text_head.")):
            return name.split("_")[0], "heads"
        if name.startswith("clip.visual."):
            return "image", "image_tower"
        return "text", "token_table" if name.startswith("clip.token_embedding.") else "text_tower"

    def param_groups(self, settings):
        heads = list(self.net.image_head.parameters()) + list(self.net.text_head.parameters())
        head_ids = {id(p) for p in heads}
        clip = [p for p in self.net.parameters() if id(p) not in head_ids]
        return [
            {"params": clip, "lr": settings.lr, "weight_decay": settings.weight_decay, "optimizer": "adamw"},
            {"params": heads, "lr": settings.lr_head, "weight_decay": settings.weight_decay, "optimizer": "adamw"},
            {
                "params": list(self.criterion.parameters()),
                "lr": settings.lr_proxy,
                "weight_decay": 5e-4,
                "optimizer": "sgd",
            },
        ]
