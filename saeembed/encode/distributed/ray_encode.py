"""Encoding on Ray: one reader+SAE actor per GPU (or CPU slot), one Ray task per shard.

No scheduler of ours: Ray places the actors, an :class:`ray.util.ActorPool` hands shards to idle
actors, and Ray restarts an actor that dies (``max_restarts``) and re-runs its shard on the restarted
actor (``max_task_retries``). The atomic-shard protocol stays the source of truth: each actor writes
its shard into the work folder (:class:`~saeembed.encode.distributed.shards.ShardFolder`, local or on
storage every node sees), an ``acts`` file marks a shard done, so a re-run after a crash of the
driver or of a whole cluster skips finished shards. A shard's rows depend only on its documents and
the recorded settings, so the rows equal those of a single-process encode. The driver loads no
model: the first actor reports the settings, every other actor must report the same ones.

Fault injection for tests: ``SAEEMBED_FAULT_EXIT_ONCE=PATH`` makes the first actor that reaches a
shard create ``PATH`` and ``os._exit`` after writing that shard's docs file and before its acts
file (a real process death in the middle of a shard), once per PATH.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
from types import SimpleNamespace
from typing import Any, Iterator

from ...errors import UserError
from ..options import EncodeOptions

log = logging.getLogger(__name__)

FAULT_ENV = "SAEEMBED_FAULT_EXIT_ONCE"
MAX_RESTARTS = 3  # restarts of one actor (each also retries the shard it was running)
_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
INSTALL_HINT = "pip install 'saeembed[ray]'"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray/--devices need Ray, which is not installed; {INSTALL_HINT}") from None
    return ray


# --- devices -------------------------------------------------------------------------------------------

def parse_devices(spec: str) -> list[str]:
    """``cuda:0,cuda:1`` / ``cpu,cpu`` / ``all`` → one device per actor (``all``: every visible GPU, or
    one CPU slot per core when there is none)."""
    spec = spec.strip()
    if spec == "all":
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n:
            return [f"cuda:{i}" for i in range(n)]
        log.warning("--devices all: no GPU visible, using one CPU worker per core")
        return ["cpu"] * max(1, os.cpu_count() or 1)
    out = [d.strip() for d in spec.split(",")]
    for d in out:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", d):
            raise UserError(f"--devices entry {d!r} is not a device; pass e.g. cuda:0,cuda:1, all, or cpu,cpu")
    if any(d.startswith("cuda") for d in out):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        for d in out:
            if d.startswith("cuda:") and int(d.split(":")[1]) >= n:
                raise UserError(f"--devices {d}: this machine has {n} GPU(s) (cuda:0..cuda:{max(n - 1, 0)}); "
                                "pass devices that exist, or all")
        if n == 0:
            raise UserError("--devices names cuda but no GPU is visible; pass cpu,cpu or leave --devices out")
    ids = [d for d in out if d.startswith("cuda:")]
    if len(set(ids)) != len(ids):
        raise UserError(f"--devices {spec}: a GPU is listed twice; one actor per GPU")
    return out


def connect(ray: Any, address: str | None, devices: list[str] | None) -> None:
    """Attach to the cluster (``address``: ``auto`` or host:port) or start a local one."""
    if address not in (None, "auto"):
        if not _ADDRESS.match(address):
            raise UserError(f"--ray {address!r} is not a Ray address; pass auto, host:port or ray://host:port")
        _probe(address)
    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "configure_logging": False, "log_to_driver": False}
    if address == "auto":
        try:
            ray.init(address="auto", **kwargs)
            log.info("attached to the running Ray cluster")
            return
        except ConnectionError:
            log.info("no running Ray cluster found; starting a local one")
    elif address is not None:
        try:
            ray.init(address=address, **kwargs)
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise UserError(f"cannot reach the Ray cluster at {address}: {first}; start it with `ray start --head` "
                            "or pass --ray auto") from None
    gpus = [d for d in devices or [] if d.startswith("cuda:")]
    if gpus:  # the local cluster sees exactly the listed GPUs, so actors land on them
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(d.split(":")[1] for d in gpus)
    n_cpu = max(os.cpu_count() or 1, sum(d == "cpu" for d in devices or []))
    ray.init(num_cpus=n_cpu, **kwargs)


def _probe(address: str, timeout: float = 5.0) -> None:
    """Refuse an address where nothing listens at once: Ray itself retries a dead address for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__ if not isinstance(exc, TimeoutError) else "timed out"
        raise UserError(f"cannot reach the Ray cluster at {address}: {reason}; start it with `ray start --head` "
                        "(it prints the address) or pass --ray auto") from None


def plan_workers(ray: Any, opts: EncodeOptions, devices: list[str] | None) -> list[str]:
    """The device kind of each actor ("cuda" or "cpu"), checked against the cluster's resources."""
    res = ray.cluster_resources()
    n_gpu, n_cpu = int(res.get("GPU", 0)), int(res.get("CPU", 0))
    if devices:
        kinds = ["cuda" if d.startswith("cuda") else "cpu" for d in devices]
    else:
        n = opts.ray_workers or (n_gpu if n_gpu else n_cpu)
        kinds = ["cuda" if n_gpu else "cpu"] * max(1, n)
    need_gpu, need_cpu = kinds.count("cuda"), len(kinds)
    if need_gpu > n_gpu:
        raise UserError(f"{need_gpu} GPU worker(s) asked for but the Ray cluster has {n_gpu} GPU(s); pass "
                        f"--ray-workers {max(n_gpu, 1)} or fewer devices")
    if need_cpu > n_cpu:
        raise UserError(f"{need_cpu} worker(s) asked for but the Ray cluster has {n_cpu} CPU slot(s); pass "
                        f"--ray-workers {max(n_cpu, 1)} or fewer devices")
    return kinds


# --- the actor -----------------------------------------------------------------------------------------

class EncodeWorker:
    """Holds one reader + SAE; encodes whole shards into the shared work folder."""

    def __init__(self, opts: EncodeOptions, corpus_box: list[Any], folder: Any, fault_marker: str | None) -> None:
        # the corpus comes as an object reference inside a list: Ray does not resolve nested
        # references, so the actor fetches it when it (re)starts, and a restart never depends on
        # constructor arguments that the object store might have released
        self.opts, self.corpus_box, self.folder, self.fault_marker = opts, corpus_box, folder, fault_marker
        self.reader = None

    def _ensure(self) -> None:
        if self.reader is not None:
            return
        import ray
        import torch

        self.corpus = ray.get(self.corpus_box[0])
        from ...sae import open_sae
        from ..plan import load_reader, resolve_layer, settings_for

        if self.opts.device == "cpu":
            torch.set_num_threads(1)  # one CPU slot per actor
        loaded = open_sae(self.opts.sae or "default")
        layer = resolve_layer(loaded, self.opts.layer)
        rdr = load_reader(self.opts, loaded, layer)
        self.sae = loaded.sae.to(rdr.device)
        self.settings = settings_for(self.opts, rdr, loaded, self.corpus).as_dict()
        self.sae_id = loaded.sae_id
        self.reader = rdr

    def describe(self) -> dict[str, Any]:
        self._ensure()
        import ray

        return {"settings": self.settings, "sae": self.sae_id, "device": str(self.reader.device),
                "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def encode(self, shard: int) -> tuple[int, int, int, int]:
        """Encode one shard and write it atomically; returns (shard, docs, non-zeros, content tokens)."""
        self._ensure()
        from ..run import encode_shard, tokenise_shard

        s = self.settings
        work = tokenise_shard(self.reader, self.corpus, shard, s["shard_docs"], s["batch_tokens"])
        acts = encode_shard(self.reader, self.sae, work)
        self.folder.write_parquet(work.docs_frame(), self.folder.docs(shard))
        self._maybe_die()
        self.folder.write_parquet(acts, self.folder.acts(shard))
        return shard, len(work.row_idx), acts.height, int(work.n_tokens.sum())

    def _maybe_die(self) -> None:
        if not self.fault_marker:
            return
        try:
            fd = os.open(self.fault_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(17)  # a real death in the middle of a shard: docs written, acts not


# --- the driver ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def _worker_errors(ray: Any) -> Iterator[None]:
    """A worker's UserError re-raised as itself (one line), and a worker that died more often than Ray
    restarts it reported as one line."""
    try:
        yield
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, UserError):
            raise UserError(str(cause)) from None
        raise
    except ray.exceptions.RayActorError as exc:
        raise UserError(f"a Ray worker died {MAX_RESTARTS + 1} times ({str(exc).splitlines()[0][:160]}); finished "
                        "shards are kept: fix the cause and re-run the same command to resume") from None


def _get(ray: Any, refs: Any) -> Any:
    """ray.get with :func:`_worker_errors`."""
    with _worker_errors(ray):
        return ray.get(refs)


def encode_corpus_ray(store_path: Any, corpus: Any, name: str, opts: EncodeOptions) -> dict[str, Any]:
    """:func:`saeembed.encode.encode_corpus` on Ray (``opts.ray`` and/or ``opts.devices``)."""
    from pathlib import Path

    from ...store.handle import registry_row
    from ..plan import claimed, request_for
    from ..progress import store_bytes, summary_line
    from ..workdir import remove_work_dir, work_root
    from .shards import ShardFolder

    if opts.loaded_reader is not None:
        raise UserError("loaded_reader cannot be sent to Ray workers; pass reader= (an id or path) instead")
    ray = import_ray()
    devices = parse_devices(opts.devices) if opts.devices else None
    req = request_for(store_path, corpus, name, opts)
    with claimed(req, opts) as stored:
        if stored:
            if opts.work_dir is not None:  # shards a crashed run left on shared storage
                ShardFolder.for_corpus(opts.work_dir, req.name, create=False).remove(missing_ok=True)
            return registry_row(req.store_path, req.name)
        folder = ShardFolder.for_corpus(opts.work_dir or str(work_root(req.store_path)), req.name)
        connect(ray, opts.ray, devices)
        kinds = plan_workers(ray, opts, devices)
        size_before = store_bytes(req.store_path)
        settings, n_shards, pending, tokens, seconds = _run(ray, opts, req.corpus, folder, kinds)
        row = _ingest(req.store_path, req.name, req.corpus, req.loaded, settings, folder, n_shards, opts)
        if folder.local and Path(folder.path) == req.work_dir.resolve():
            remove_work_dir(req.work_dir, req.store_path)
        else:
            folder.remove()
    log.info(summary_line(req.name, row, tokens, seconds, store_bytes(req.store_path) - size_before, req.store_path))
    return row


def _run(ray: Any, opts: EncodeOptions, docs: Any, folder: Any,
         kinds: list[str]) -> tuple[Any, int, list[int], int, float]:
    from ray.util import ActorPool

    from ...corpus import describe_rows, describe_source
    from ..plan import EncodeSettings, size_estimate
    from ..progress import EncodeProgress

    corpus_ref = ray.put(docs)
    fault = os.environ.get(FAULT_ENV) or None
    remote = ray.remote(EncodeWorker)
    actors = []
    for kind in kinds:
        worker_opts = dataclasses.replace(opts, device="cuda" if kind == "cuda" else "cpu", progress=False)
        actors.append(remote.options(num_cpus=1, num_gpus=1 if kind == "cuda" else 0, max_restarts=MAX_RESTARTS,
                                     max_task_retries=MAX_RESTARTS).remote(worker_opts, [corpus_ref], folder, fault))
    try:
        descs = _get(ray, [a.describe.remote() for a in actors])
        settings = descs[0]["settings"]
        for d in descs[1:]:
            if d["settings"] != settings:
                diff = sorted(k for k in settings if settings[k] != d["settings"].get(k))
                raise UserError(f"Ray workers disagree on {', '.join(diff)} (devices {descs[0]['device']} and "
                                f"{d['device']}); use one kind of device, or pass --dtype explicitly")
        folder.prepare_manifest(settings)
        s = EncodeSettings(**settings)
        n_shards = math.ceil(docs.n_docs / s.shard_docs)
        done = folder.done(n_shards)
        pending = [i for i in range(n_shards) if i not in done]
        log.info("encoding %d documents of %s (%s) on Ray: %d worker(s) (%s), reader %s layer %d, SAE %s, %s",
                 docs.n_docs, describe_source(docs.source), describe_rows(docs), len(actors),
                 ", ".join(sorted({d["device"] for d in descs})), s.reader, s.layer, s.sae, s.dtype)
        if done:
            log.info("resuming: %d of %d shards already done", len(done), n_shards)
        done_docs = sum(min(s.shard_docs, docs.n_docs - i * s.shard_docs) for i in done)
        # Ray reports whole shards: the bar moves per shard (the local encode's moves per batch)
        bar = EncodeProgress(docs, pending, s.shard_docs, done_docs, opts.progress,
                             lambda per_doc: size_estimate(docs, per_doc))
        pool = ActorPool(actors)
        try:
            with _worker_errors(ray):
                for shard, n, nnz, t in pool.map_unordered(lambda a, shard: a.encode.remote(shard), pending):
                    bar.shard_tokenised(shard, t)
                    bar.batch_done(t, n, n, nnz)
        finally:
            bar.close()
    finally:
        for a in actors:
            ray.kill(a)
    missing = [i for i in range(n_shards) if i not in folder.done(n_shards)]
    if missing:
        raise UserError(f"{len(missing)} shard(s) missing after the run (first {missing[0]}); re-run to resume")
    return s, n_shards, pending, bar.tokens_done, bar.seconds


def _ingest(store_path: Any, name: str, docs: Any, loaded: Any, settings: Any, folder: Any, n_shards: int,
            opts: EncodeOptions) -> dict[str, Any]:
    """The corpus enters the store in one transaction, from the shards in ``folder``."""
    from ... import store as store_mod
    from ..ingest import documents_frame, sae_record
    from ..plan import POOLINGS

    documents = documents_frame(docs, [folder.read_parquet(folder.docs(s)) for s in range(n_shards)])
    plan = SimpleNamespace(loaded=loaded, settings=settings, reader=SimpleNamespace(name=settings.reader))
    con = store_mod.connect(store_path, wait=opts.wait)
    try:
        with store_mod.transaction(con):
            store_mod.register_sae(con, loaded.sae_id, sae_record(plan), loaded.labels)
            store_mod.ingest_corpus(
                con, name=name, source=docs.source, reader=settings.reader, layer=settings.layer, sae=settings.sae,
                pooling=POOLINGS, config=settings.as_dict(), documents=documents,
                activation_files=[folder.acts(i) for i in range(n_shards)], filesystem=folder.fs,
                keep=opts.keep, parquet_dir=opts.parquet_dir, store_path=store_path)
        row = store_mod.StoreReader(con).corpus(name)
    finally:
        con.close()
    return row


__all__ = ["encode_corpus_ray", "EncodeWorker", "parse_devices", "connect", "plan_workers", "FAULT_ENV"]
