"""TopK + AuxK training on an activation cache (Gao et al. 2024), and the held-out metrics."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name

from ..errors import UserError
from ..reader import pick_device
from ..sae.formats import save_saelens
from ..sae.model import SAEConfig, SparseAutoencoder
from ..threads import torch_threads
from .cache import ActivationCache
from .config import TrainConfig


def heldout_mask(doc: np.ndarray, frac: float) -> np.ndarray:
    """Deterministic document-level split: a document is held out when its hashed index falls in ``frac``.

    Splitting by document (not token) keeps neighbouring tokens of one text on one side.
    """
    h = (doc.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(1_000_003)
    return h < np.uint64(int(frac * 1_000_003))


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


def _initial_sae(cache: ActivationCache, cfg: TrainConfig, train_rows: list[tuple[int, np.ndarray]], n_train: int,
                 preloaded: torch.Tensor | None) -> tuple[SparseAutoencoder, float]:
    """A fresh SAE and the input scale: E‖x‖² = d_in, ``b_dec`` at the coordinate-wise median of a sample
    (Gao et al. use the geometric median)."""
    d_in, man = cache.d_in, cache.manifest
    sample_size = min(cfg.batch_size * 8, n_train - n_train % cfg.batch_size) or cfg.batch_size
    sample = next(_batches(cache, train_rows, sample_size, cfg.buffer_tokens, np.random.default_rng(cfg.seed + 1),
                           preloaded)).float()
    scale = math.sqrt(d_in / float((sample ** 2).sum(1).mean()))
    sae_cfg = SAEConfig(d_in=d_in, d_sae=cfg.d_sae, activation="topk", k=cfg.k, apply_b_dec_to_input=True,
                        model_name=man.get("reader"), hook_layer=man.get("layer"),
                        hook_name=man.get("hook_name") or f"blocks.{man.get('layer')}.hook_resid_post")
    sae = SparseAutoencoder(sae_cfg)
    with torch.no_grad():
        sae.b_dec.copy_((sample * scale).median(0).values)
    return sae, scale


def _lr_schedule(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up, constant, then linear decay to 0 over the last ``decay_frac`` of the steps."""
    lr = cfg.resolved_lr()
    decay_start = int(total_steps * (1 - cfg.decay_frac))

    def lr_at(step: int) -> float:
        f = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        if step >= decay_start:
            f *= max(0.0, (total_steps - step) / max(total_steps - decay_start, 1))
        return lr * f

    return lr_at


def _optimise(sae: SparseAutoencoder, opt: torch.optim.Optimizer, x: torch.Tensor, lr: float, k: int, aux_k: int,
              dead: torch.Tensor, auxk_coef: float) -> tuple[float, float, torch.Tensor]:
    """One Adam step that keeps decoder rows unit norm (radial gradient removed, rows renormalised)."""
    loss, fvu, aux, fired_idx = _step_loss(sae, x, k, aux_k, dead, auxk_coef)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        w = sae.W_dec
        if w.grad is not None:
            w.grad -= (w.grad * w).sum(1, keepdim=True) * w
    opt.step()
    with torch.no_grad():
        sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)
    return fvu, aux, fired_idx


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
    cfg = cfg or TrainConfig()
    with torch_threads(cfg.threads):
        return _train(cache, cfg, progress)


def _train(cache: ActivationCache | str | Path, cfg: TrainConfig, progress: Callable[[str], None] | None
           ) -> tuple[SparseAutoencoder, dict[str, Any]]:
    if not isinstance(cache, ActivationCache):
        cache = ActivationCache(cache)
    dev = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_start = time.time()
    train_rows, held = _split_cache(cache, cfg.heldout_frac)
    n_train = int(sum(len(r) for _, r in train_rows))
    if n_train < cfg.batch_size:
        raise UserError(f"only {n_train} training tokens cached; need at least one batch of {cfg.batch_size}")
    preloaded = None
    if n_train <= cfg.buffer_tokens:
        preloaded = torch.from_numpy(np.concatenate([cache.load(i)["acts"][r] for i, r in train_rows]))
    sae, scale = _initial_sae(cache, cfg, train_rows, n_train, preloaded)
    sae = sae.to(dev).train()
    aux_k = cfg.aux_k if cfg.aux_k is not None else min(cache.d_in // 2, 256)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.resolved_lr(), betas=(0.9, 0.999), eps=6.25e-10)
    total_steps = cfg.steps if cfg.steps is not None else max(1, int(cfg.epochs * (n_train // cfg.batch_size)))
    lr_at = _lr_schedule(cfg, total_steps)

    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=dev)
    step = 0
    log: list[dict[str, float]] = []
    run_fvu = run_aux = 0.0
    t_loop = time.time()
    while step < total_steps:
        for xb in _batches(cache, train_rows, cfg.batch_size, cfg.buffer_tokens, rng, preloaded):
            if step >= total_steps:
                break
            x = xb.to(dev).float() * scale
            fvu, aux, fired_idx = _optimise(sae, opt, x, lr_at(step), cfg.k, aux_k if cfg.auxk_coef > 0 else 0,
                                            since_fired >= cfg.dead_tokens, cfg.auxk_coef)
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
    metrics: dict[str, Any] = {
        "train_dead_frac": float((since_fired >= cfg.dead_tokens).float().mean()),
        "train_tokens": n_train,
        "token_passes": total_steps * cfg.batch_size,
        "steps": total_steps,
        "epochs": round(total_steps * cfg.batch_size / n_train, 2),
        "train_wall_s": round(time.time() - t_start, 1),
        "input_scale": scale,
        "log": log,
    }
    return _finish(sae, cfg, cache.manifest, held, scale, aux_k, metrics)


def _finish(sae: SparseAutoencoder, cfg: TrainConfig, man: dict[str, Any], held: torch.Tensor, scale: float,
            aux_k: int, metrics: dict[str, Any]) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Fold the input scale back (the saved SAE reads raw hidden states; decoder rows stay unit norm),
    measure the held-out documents and record the recipe in the SAE's config."""
    with torch.no_grad():
        sae.b_enc /= scale
        sae.b_dec /= scale
    sae = sae.eval()
    metrics = {"heldout": evaluate_sae(sae, held) if len(held) else {}, **metrics}
    recipe = {k: v for k, v in asdict(cfg).items() if k not in ("extra", "log_every", "buffer_tokens", "threads")}
    recipe.update(lr=cfg.resolved_lr(), aux_k=aux_k,
                  trainer="saeembed.train.train_topk_sae (TopK + AuxK, Gao et al. 2024)")
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

    The pre-activations are one dense matmul (with autograd) and the k selected ones are gathered from
    it; the decoder is an embedding bag over the selected latents. Gathering the selected encoder
    columns per token instead (``F.embedding`` + batched dot products) has fewer FLOPs but copies
    batch × (k + aux_k) × d_in floats and measured 5.7× slower per step on CPU (memory-bound), so the
    dense matmul and its two backward matmuls are the cheaper form of the same gradients.
    """
    xc = x - sae.b_dec
    pre = xc @ sae.W_enc + sae.b_enc
    with torch.no_grad():
        _, idx = pre.topk(k, dim=-1)
    z = torch.relu(pre.gather(1, idx))
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
        az = torch.relu(pre.gather(1, aidx))
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

