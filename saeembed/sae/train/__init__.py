"""Train a TopK sparse autoencoder (with AuxK) on a reader's activations.

Two stages, both restartable:

1. :func:`cache_activations` runs the :class:`~saeembed.reader.Reader` over corpora and keeps the
   hidden states of *pooled* tokens only (document content; chat-template and special tokens are
   dropped, exactly the tokens an encode would pool). They are written as fp16 safetensors chunks
   (``chunk_00000.safetensors``: ``acts`` [n, d_in], ``doc``, ``pos``, ``tok``) via tmp+rename,
   so a killed run leaves only whole chunks and a rerun skips them. ``manifest.json`` records the
   reader, layer, corpus list and chunking; a rerun with different settings is refused rather
   than silently mixing activations of two setups.
2. :func:`train_topk_sae` trains the recipe of Gao et al. 2024 ("Scaling and evaluating sparse
   autoencoders"): TopK activation, decoder rows of unit norm (gradient parallel to each row
   removed, rows renormalised after each step), ``b_dec`` initialised at the data median, Adam
   with lr ``2e-4 / sqrt(d_sae / 2**14)``, and the AuxK loss: the ``aux_k`` largest
   pre-activations among *dead* latents (not fired for ``dead_tokens`` tokens) reconstruct the
   main reconstruction's residual, weighted 1/32, which pulls dead latents back into use.
   Inputs are scaled to mean squared norm ``d_in`` while training (so one learning rate fits any
   reader) and the scale is folded back into ``b_enc``/``b_dec`` before saving, so the saved SAE
   reads raw hidden states and keeps unit-norm decoder rows.

Held-out documents (a fixed hash of the document index, 5 % by default) never enter training;
FVU, L0 and the dead fraction are measured on them.

Modules: :mod:`.corpora` (which texts), :mod:`.cache` (stage 1), :mod:`.topk` (stage 2).
"""

from typing import Any

from .config import TrainConfig

# torch-heavy parts load on first use, so the CLI can build its flags from TrainConfig cheaply.
_LAZY = {"CACHE_FORMAT": "cache", "MANIFEST": "cache", "ActivationCache": "cache", "cache_activations": "cache",
         "read_hidden_states": "cache",
         "CorpusSpec": "corpora", "load_documents": "corpora", "parse_corpus_spec": "corpora",
         "_step_loss": "topk", "evaluate_sae": "topk", "heldout_mask": "topk", "save_trained_sae": "topk",
         "train_topk_sae": "topk"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TrainConfig", *sorted(_LAZY)]  # noqa: PLE0604 - the lazily loaded names
