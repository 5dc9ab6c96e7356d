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
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import UserError
from .formats import save_saelens
from .model import SAEConfig, SparseAutoencoder

CACHE_FORMAT = 1
MANIFEST = "manifest.json"


# ------------------------------------------------------------------------------------------------
# corpora
# ------------------------------------------------------------------------------------------------
@dataclass
class CorpusSpec:
    """One training corpus: a file, its text column, and optional caps.

    ``max_docs`` samples documents (seeded) rather than taking the head, because long-format
    files (one task or model after another) would otherwise contribute a single slice.
    ``max_chars`` trims long documents so a token budget spreads over more documents.
    """

    path: str
    text_col: str | None = None
    max_docs: int | None = None
    max_chars: int | None = None


def parse_corpus_spec(spec: str, text_col: str | None = None) -> CorpusSpec:
    """``path`` or ``path:col`` (the ``:col`` suffix is used only when ``path`` itself is not a file)."""
    if not Path(spec).exists() and ":" in spec:
        path, _, col = spec.rpartition(":")
        if Path(path).exists():
            return CorpusSpec(path=path, text_col=col or text_col)
    return CorpusSpec(path=spec, text_col=text_col)


def load_documents(specs: Sequence[CorpusSpec], seed: int = 0) -> list[str]:
    """Documents of all corpora, interleaved round-robin so any prefix is a mix of all of them.

    Why interleave: ``max_tokens`` stops caching early; without interleaving the last corpora
    would be missing from the training data.
    """
    from ..corpus import read_corpus

    per: list[list[str]] = []
    for i, spec in enumerate(specs):
        corpus = read_corpus(spec.path, text_col=spec.text_col, drop_empty=True)
        if corpus.kind != "text":
            raise UserError(f"{spec.path}: training reads plain text columns; pass --text-col")
        docs = corpus.docs["text"]
        rng = np.random.default_rng(seed + i)
        order = rng.permutation(len(docs))
        if spec.max_docs:
            order = order[: spec.max_docs]
        texts = [docs[int(j)] for j in order]
        if spec.max_chars:
            texts = [t[: spec.max_chars] for t in texts]
        per.append([t for t in texts if t and t.strip()])
    out: list[str] = []
    for j in range(max((len(p) for p in per), default=0)):
        out.extend(p[j] for p in per if j < len(p))
    return out


# ------------------------------------------------------------------------------------------------
# activation cache
# ------------------------------------------------------------------------------------------------
def _chunk_path(cache_dir: Path, i: int) -> Path:
    return cache_dir / f"chunk_{i:05d}.safetensors"


def _chunk_tokens(path: Path) -> int:
    with safe_open(str(path), "np") as f:
        return int(f.metadata()["n_tokens"])


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def cache_activations(
    corpora: Sequence[CorpusSpec],
    cache_dir: str | Path,
    reader: Any = None,
    layer: int = 15,
    device: str = "auto",
    max_tokens: int | None = None,
    chunk_docs: int = 256,
    token_budget: int = 8192,
    seed: int = 0,
    progress: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Cache pooled-token hidden states of ``reader`` at ``layer`` as fp16 chunks; returns the manifest.

    ``reader`` is a loaded :class:`~saeembed.reader.Reader` (reused, e.g. by tests) or a reader
    spec string/None (loaded here). Chunk ``i`` always holds documents
    ``[i*chunk_docs, (i+1)*chunk_docs)``, so a rerun recomputes exactly the missing chunks and
    produces the same arrays. Caching stops once ``max_tokens`` tokens are cached.
    """
    from ..reader import Reader, batches_by_budget, pad_batch

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(reader, Reader):
        reader = Reader(reader, layer=layer, device=device)
    identity = {
        "format": CACHE_FORMAT,
        "reader": reader.name,
        "layer": reader.layer,
        "hook_name": f"blocks.{reader.layer}.hook_resid_post",
        "hidden_size": reader.hidden_size,
        "chat_template": reader.chat_template,
        "window": reader.window,
        "corpora": [asdict(c) for c in corpora],
        "chunk_docs": chunk_docs,
        "seed": seed,
    }
    man_path = cache_dir / MANIFEST
    if man_path.exists():
        old = json.loads(man_path.read_text())
        old_id = {k: old.get(k) for k in identity}
        if old_id != identity:
            diff = [k for k in identity if old_id.get(k) != identity[k]]
            raise UserError(f"activation cache {cache_dir} was made with different settings ({', '.join(diff)}); "
                            "use a new --cache directory or delete this one")
    _write_json_atomic(man_path, {**identity, "complete": False})

    docs = load_documents(corpora, seed=seed)
    n_chunks = math.ceil(len(docs) / chunk_docs)
    total = 0
    t0 = time.time()
    computed = 0
    done_chunks = 0
    for ci in range(n_chunks):
        if max_tokens is not None and total >= max_tokens:
            break
        path = _chunk_path(cache_dir, ci)
        if path.exists():
            total += _chunk_tokens(path)
            done_chunks += 1
            continue
        lo = ci * chunk_docs
        wins = [w for d in range(lo, min(lo + chunk_docs, len(docs))) for w in reader.windows(docs[d], d)]
        serial = {id(w): s for s, w in enumerate(wins)}
        parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for batch in batches_by_budget(wins, token_budget):
            ids, attn, pool = pad_batch(batch, reader.pad_id)
            hidden = reader.hidden_states(ids, attn).float().cpu()
            for j, w in enumerate(batch):
                m = pool[j]
                parts[serial[id(w)]] = (hidden[j][m].to(torch.float16).numpy(), ids[j][m].numpy())
        acts, toks, doc_ids, pos = [], [], [], []
        seen: dict[int, int] = {}
        for s, w in enumerate(wins):
            a, t = parts[s]
            start = seen.get(w.doc, 0)
            seen[w.doc] = start + len(t)
            acts.append(a)
            toks.append(t.astype(np.int32))
            doc_ids.append(np.full(len(t), w.doc, np.int32))
            pos.append(np.arange(start, start + len(t), dtype=np.int32))
        n = int(sum(len(t) for t in toks))
        tensors = {
            "acts": torch.from_numpy(np.concatenate(acts) if acts else np.zeros((0, reader.hidden_size), np.float16)),
            "tok": torch.from_numpy(np.concatenate(toks) if toks else np.zeros(0, np.int32)),
            "doc": torch.from_numpy(np.concatenate(doc_ids) if doc_ids else np.zeros(0, np.int32)),
            "pos": torch.from_numpy(np.concatenate(pos) if pos else np.zeros(0, np.int32)),
        }
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        save_file(tensors, str(tmp), metadata={"n_tokens": str(n), "docs": f"{lo}-{lo + chunk_docs}"})
        os.replace(tmp, path)
        total += n
        computed += n
        done_chunks += 1
        if progress:
            el = time.time() - t0
            progress(f"chunk {ci + 1}/{n_chunks}: {total:,} tokens cached "
                     f"({computed / max(el, 1e-9):.0f} tok/s, {el:.0f} s)")
    manifest = {**identity, "complete": True, "n_chunks": done_chunks, "n_tokens": total,
                "n_docs_available": len(docs), "max_tokens": max_tokens}
    _write_json_atomic(man_path, manifest)
    return manifest


class ActivationCache:
    """Read side of :func:`cache_activations`: the manifest plus whole chunks on demand."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.dir = Path(cache_dir)
        man = self.dir / MANIFEST
        if not man.exists():
            raise UserError(f"{self.dir} is not an activation cache (no {MANIFEST}); run caching first")
        self.manifest: dict[str, Any] = json.loads(man.read_text())
        n = self.manifest.get("n_chunks")
        paths = sorted(self.dir.glob("chunk_*.safetensors"))
        self.paths = paths[:n] if n is not None else paths
        if not self.paths:
            raise UserError(f"activation cache {self.dir} holds no chunks")
        self.sizes = [_chunk_tokens(p) for p in self.paths]

    @property
    def n_tokens(self) -> int:
        return int(sum(self.sizes))

    @property
    def d_in(self) -> int:
        return int(self.manifest["hidden_size"])

    def load(self, i: int) -> dict[str, np.ndarray]:
        with safe_open(str(self.paths[i]), "np") as f:
            return {k: f.get_tensor(k) for k in f.keys()}


def heldout_mask(doc: np.ndarray, frac: float) -> np.ndarray:
    """Deterministic document-level split: a document is held out when its hashed index falls in ``frac``.

    Splitting by document (not token) keeps neighbouring tokens of one text on one side.
    """
    h = (doc.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(1_000_003)
    return h < np.uint64(int(frac * 1_000_003))


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Hyper-parameters; defaults follow Gao et al. 2024 scaled to a small CPU run."""

    d_sae: int = 6144
    k: int = 32
    epochs: float = 4.0
    steps: int | None = None  # overrides epochs
    batch_size: int = 2048
    lr: float | None = None  # default 2e-4 / sqrt(d_sae / 2**14)
    aux_k: int | None = None  # default min(d_in // 2, 256)
    auxk_coef: float = 1 / 32
    dead_tokens: int = 200_000
    heldout_frac: float = 0.05
    warmup_steps: int = 20
    decay_frac: float = 0.2  # linear lr decay to 0 over the last fraction of steps
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    log_every: int = 50
    buffer_tokens: int = 4_000_000
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.d_sae / 2 ** 14)


def _split_cache(cache: ActivationCache, frac: float, max_heldout: int = 200_000
                 ) -> tuple[list[tuple[int, np.ndarray]], torch.Tensor]:
    """Per chunk: indices of training rows; plus the held-out activations (fp16, capped)."""
    train_rows, held = [], []
    n_held = 0
    for i in range(len(cache.paths)):
        c = cache.load(i)
        m = heldout_mask(c["doc"], frac)
        train_rows.append((i, np.flatnonzero(~m)))
        if n_held < max_heldout and m.any():
            h = c["acts"][m][: max_heldout - n_held]
            held.append(h)
            n_held += len(h)
    d = cache.d_in
    held_t = torch.from_numpy(np.concatenate(held)) if held else torch.zeros((0, d), dtype=torch.float16)
    return train_rows, held_t


def _batches(cache: ActivationCache, train_rows: list[tuple[int, np.ndarray]], batch_size: int,
             buffer_tokens: int, rng: np.random.Generator, preloaded: torch.Tensor | None
             ) -> Iterator[torch.Tensor]:
    """One epoch of shuffled batches: chunks in random order fill a buffer that is shuffled as a whole.

    When the whole training set fits in the buffer it is loaded once and fully shuffled per epoch.
    """
    if preloaded is not None:
        perm = torch.from_numpy(rng.permutation(len(preloaded)))
        for s in range(0, len(perm) - batch_size + 1, batch_size):
            yield preloaded[perm[s:s + batch_size]]
        return
    order = rng.permutation(len(train_rows))
    buf: list[np.ndarray] = []
    n = 0
    carry = np.zeros((0, cache.d_in), np.float16)
    for j, ci in enumerate(order):
        i, rows = train_rows[ci]
        buf.append(cache.load(i)["acts"][rows])
        n += len(rows)
        if n >= buffer_tokens or j == len(order) - 1:
            data = np.concatenate([carry, *buf])
            data = data[rng.permutation(len(data))]
            full = len(data) - len(data) % batch_size
            for s in range(0, full, batch_size):
                yield torch.from_numpy(data[s:s + batch_size])
            carry, buf, n = data[full:], [], 0


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, x: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
    """FVU, L0 and dead fraction of ``sae`` on activations ``x`` (raw reader units).

    FVU = Σ‖x − x̂‖² / Σ‖x − mean(x)‖²; L0 = mean number of non-zero latents per token; a latent is
    dead here when it never fires on ``x``.
    """
    dev = sae.W_enc.device
    x = x.to(dev)
    mean = x.float().mean(0)
    sse = tot = 0.0
    l0 = 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool, device=dev)
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].float()
        a = sae.encode(xb)
        r = sae.decode(a)
        sse += float(((xb - r) ** 2).sum())
        tot += float(((xb - mean) ** 2).sum())
        nz = a > 0
        l0 += float(nz.sum())
        fired |= nz.any(0)
    n = max(len(x), 1)
    return {"fvu": sse / max(tot, 1e-12), "l0": l0 / n, "dead_frac": 1.0 - float(fired.float().mean()),
            "n_tokens": int(len(x))}


def train_topk_sae(
    cache: ActivationCache | str | Path,
    cfg: TrainConfig | None = None,
    progress: Callable[[str], None] | None = print,
) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train a TopK SAE (+AuxK) on a cache; returns the SAE (raw-unit weights) and its metrics.

    The returned SAE carries ``model_name``, ``hook_layer``, ``hook_name`` and, in
    ``cfg.extra["saeembed"]``, the recipe and the held-out metrics, so :func:`save_saelens`
    writes everything a later reader of the checkpoint needs.
    """
    from ..reader import pick_device

    cfg = cfg or TrainConfig()
    if not isinstance(cache, ActivationCache):
        cache = ActivationCache(cache)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_start = time.time()
    d_in = cache.d_in
    man = cache.manifest
    train_rows, held = _split_cache(cache, cfg.heldout_frac)
    n_train = int(sum(len(r) for _, r in train_rows))
    if n_train < cfg.batch_size:
        raise UserError(f"only {n_train} training tokens cached; need at least one batch of {cfg.batch_size}")
    preloaded = None
    if n_train <= cfg.buffer_tokens:
        preloaded = torch.from_numpy(np.concatenate([cache.load(i)["acts"][r] for i, r in train_rows]))

    # scale so that E‖x‖² = d_in, and b_dec at the coordinate-wise median (Gao et al.: geometric median)
    sample = next(_batches(cache, train_rows, min(cfg.batch_size * 8, n_train - n_train % cfg.batch_size) or cfg.batch_size,
                           cfg.buffer_tokens, np.random.default_rng(cfg.seed + 1), preloaded)).float()
    scale = math.sqrt(d_in / float((sample ** 2).sum(1).mean()))
    sae_cfg = SAEConfig(d_in=d_in, d_sae=cfg.d_sae, activation="topk", k=cfg.k, apply_b_dec_to_input=True,
                        model_name=man.get("reader"), hook_layer=man.get("layer"),
                        hook_name=man.get("hook_name") or f"blocks.{man.get('layer')}.hook_resid_post")
    sae = SparseAutoencoder(sae_cfg)
    with torch.no_grad():
        sae.b_dec.copy_((sample * scale).median(0).values)
    sae = sae.to(dev).train()
    aux_k = cfg.aux_k if cfg.aux_k is not None else min(d_in // 2, 256)
    lr = cfg.resolved_lr()
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
    steps_per_epoch = n_train // cfg.batch_size
    total_steps = cfg.steps if cfg.steps is not None else max(1, int(cfg.epochs * steps_per_epoch))
    decay_start = int(total_steps * (1 - cfg.decay_frac))

    def lr_at(step: int) -> float:
        f = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        if step >= decay_start:
            f *= max(0.0, (total_steps - step) / max(total_steps - decay_start, 1))
        return lr * f

    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=dev)
    step = 0
    epoch = 0
    log: list[dict[str, float]] = []
    run_fvu = run_aux = 0.0
    t_loop = time.time()
    while step < total_steps:
        for xb in _batches(cache, train_rows, cfg.batch_size, cfg.buffer_tokens, rng, preloaded):
            if step >= total_steps:
                break
            x = xb.to(dev).float() * scale
            dead = since_fired >= cfg.dead_tokens
            loss, fvu, aux, fired_idx = _step_loss(sae, x, cfg.k, aux_k if cfg.auxk_coef > 0 else 0, dead,
                                                   cfg.auxk_coef)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # keep decoder rows unit norm: drop the radial gradient, renormalise after
                w = sae.W_dec
                if w.grad is not None:
                    w.grad -= (w.grad * w).sum(1, keepdim=True) * w
            opt.step()
            with torch.no_grad():
                sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)
            since_fired += len(x)
            since_fired[fired_idx] = 0
            run_fvu += fvu
            run_aux += aux
            step += 1
            if step % cfg.log_every == 0 or step == total_steps:
                n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
                rec = {"step": step, "train_fvu": run_fvu / n, "aux_loss": run_aux / n,
                       "dead_frac": float((since_fired >= cfg.dead_tokens).float().mean()),
                       "elapsed_s": round(time.time() - t_loop, 1)}
                log.append(rec)
                run_fvu = run_aux = 0.0
                if progress:
                    progress(f"step {step}/{total_steps}  fvu {rec['train_fvu']:.4f}  aux {rec['aux_loss']:.4f}  "
                             f"dead {rec['dead_frac']:.3f}  {rec['elapsed_s']:.0f} s")
        epoch += 1
    train_s = time.time() - t_start

    # fold the input scale back so the saved SAE reads raw hidden states (decoder rows stay unit norm)
    with torch.no_grad():
        sae.b_enc /= scale
        sae.b_dec /= scale
    sae = sae.eval()
    held_metrics = evaluate_sae(sae, held) if len(held) else {}
    metrics: dict[str, Any] = {
        "heldout": held_metrics,
        "train_dead_frac": float((since_fired >= cfg.dead_tokens).float().mean()),
        "train_tokens": n_train,
        "token_passes": total_steps * cfg.batch_size,
        "steps": total_steps,
        "epochs": round(total_steps * cfg.batch_size / n_train, 2),
        "train_wall_s": round(train_s, 1),
        "input_scale": scale,
        "log": log,
    }
    recipe = {k: v for k, v in asdict(cfg).items() if k not in ("extra", "log_every", "buffer_tokens", "threads")}
    recipe.update(lr=lr, aux_k=aux_k, trainer="saeembed.sae.train.train_topk_sae (TopK + AuxK, Gao et al. 2024)")
    sae.cfg.extra = {"saeembed": {
        "recipe": recipe,
        "metrics": {k: v for k, v in metrics.items() if k != "log"},
        "cache": {k: man.get(k) for k in ("reader", "layer", "hook_name", "chat_template", "window", "corpora")},
        **cfg.extra,
    }}
    return sae.cpu(), metrics


def _step_loss(sae: SparseAutoencoder, x: torch.Tensor, k: int, aux_k: int, dead: torch.Tensor,
               auxk_coef: float) -> tuple[torch.Tensor, float, float, torch.Tensor]:
    """Normalised MSE of the TopK reconstruction plus ``auxk_coef`` × the AuxK loss.

    The top-k selection runs without autograd; gradients flow only through the k selected
    pre-activations (gathered encoder columns) and an embedding-bag decoder, which is what makes
    CPU training affordable: cost per token is O(k·d_in) for the backward pass instead of O(d_sae·d_in).
    """
    xc = x - sae.b_dec
    W_enc_t = sae.W_enc.t()  # [d_sae, d_in]
    with torch.no_grad():
        pre = xc @ sae.W_enc + sae.b_enc
        _, idx = pre.topk(k, dim=-1)
    z = torch.relu(torch.einsum("bd,bkd->bk", xc, F.embedding(idx, W_enc_t)) + sae.b_enc[idx])
    recon = F.embedding_bag(idx, sae.W_dec, per_sample_weights=z, mode="sum") + sae.b_dec
    denom = ((x - x.mean(0)) ** 2).sum().clamp(min=1e-8)
    main = ((recon - x) ** 2).sum() / denom
    loss = main
    aux_val = 0.0
    n_dead = int(dead.sum())
    if aux_k > 0 and n_dead > 0:
        dead_idx = dead.nonzero().squeeze(1)
        ka = min(aux_k, n_dead)
        with torch.no_grad():
            _, sel = pre[:, dead_idx].topk(ka, dim=-1)
            aidx = dead_idx[sel]
        az = torch.relu(torch.einsum("bd,bkd->bk", xc, F.embedding(aidx, W_enc_t)) + sae.b_enc[aidx])
        arecon = F.embedding_bag(aidx, sae.W_dec, per_sample_weights=az, mode="sum")
        resid = (x - recon).detach()
        # normalised by the input's variance and damped while few latents are dead (as EleutherAI's sparsify)
        aux = ((arecon - resid) ** 2).sum() / denom.detach() * min(n_dead / aux_k, 1.0)
        aux = torch.nan_to_num(aux, 0.0)
        loss = loss + auxk_coef * aux
        aux_val = float(aux.detach())
    fired_idx = idx[z.detach() > 0].unique()
    return loss, float(main.detach()), aux_val, fired_idx


def save_trained_sae(sae: SparseAutoencoder, out: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write the SAELens layout (fp16 by default: half the size, and loading converts to fp32)."""
    return save_saelens(sae, out, dtype=dtype)


__all__ = [
    "ActivationCache", "CorpusSpec", "TrainConfig", "cache_activations", "evaluate_sae", "heldout_mask",
    "load_documents", "parse_corpus_spec", "save_trained_sae", "train_topk_sae",
]
