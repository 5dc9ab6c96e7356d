"""CLI commands that show results: ``browse`` (the local feature browser) and ``atlas`` (a corpus
map for Apple's Embedding Atlas). ``--format html`` of the analyses lives with them in
:mod:`saeembed.cli.analysis`; the rendering is :mod:`saeembed.report`."""

from __future__ import annotations

import click

from .base import open_existing_store, store_option
from .output import checked_output


@click.command("browse", short_help="Browse the store in a local web app (read-only).")
@store_option()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to bind; anything but this machine also needs --allow-remote")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="port (0: any free port)")
@click.option("--allow-remote", "allow_remote", multiple=True, metavar="NAME",
              help="serve to other machines (they could read every document), answering requests addressed to "
                   "NAME: the host name or address they use for this machine (repeatable); requests for any other "
                   "name get 403")
def browse(store: str, host: str, port: int, allow_remote: tuple[str, ...]) -> None:
    """Browse the store in a web browser: corpora, latents (labels, density, histogram, top documents,
    correlated latents), documents, diff and search. Read-only; serves on 127.0.0.1 and answers only
    requests addressed to this machine (localhost, 127.0.0.1) or to the names given to --allow-remote."""
    from ..browse import make_server, warm

    open_existing_store(store).close()
    server = make_server(store, host, port, allow_remote)
    warm(store)
    click.echo(f"saeembed browser on http://{host}:{server.port}/ (read-only; Ctrl-C stops it)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.command("atlas", short_help="Open a corpus map in Embedding Atlas.")
@click.argument("corpus")
@store_option()
@click.option("--dense", is_flag=True, help="map the dense MiniLM embeddings instead of the SAE embeddings")
@click.option("--top-latents", type=click.IntRange(min=1), default=5, show_default=True,
              help="labels of each document's N most characteristic latents, as columns")
@click.option("--output", type=click.Path(dir_okay=False), help="write the table (Parquet) here; works without "
                                                                 "Embedding Atlas installed")
@click.option("--no-open", is_flag=True, help="only write the table, do not start Embedding Atlas")
@click.option("--host", default="127.0.0.1", show_default=True, help="Embedding Atlas' address (see --allow-remote)")
@click.option("--port", type=click.IntRange(1, 65535), default=5055, show_default=True, help="Embedding Atlas' port")
@click.option("--allow-remote", is_flag=True, help="allow --host to be reachable from other machines")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the projection")
@checked_output
def atlas(corpus: str, store: str, dense: bool, top_latents: int, output: str | None, no_open: bool, host: str,
          port: int, allow_remote: bool, seed: int) -> None:
    """Open CORPUS in Apple's Embedding Atlas: a 2-D map of its SAE (or --dense) embeddings with each
    document's top latents and metadata as columns. --output FILE writes the table only."""
    import tempfile
    from pathlib import Path

    from ..atlas import ATLAS_HINT, atlas_args, atlas_frame, atlas_installed, open_in_atlas
    from ..browse import check_host
    from ..errors import UserError
    from ..fsutil import atomic_write_parquet

    launch = not no_open and (output is None or atlas_installed())
    if launch:
        check_host(host, allow_remote)
        if not atlas_installed():
            raise UserError(f"Embedding Atlas is not installed: {ATLAS_HINT}, or pass --output FILE to write the "
                            "table without it")
    path = Path(output) if output else Path(tempfile.mkdtemp(prefix="saeembed-atlas-")) / f"{corpus}.parquet"
    df = atlas_frame(open_existing_store(store), corpus, dense=dense, top_latents=top_latents, seed=seed)
    try:
        atomic_write_parquet(df, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}; pick a writable --output") from None
    click.echo(f"wrote {df.height} documents ({'dense' if dense else 'SAE'} map, top {top_latents} latents) to {path}",
               err=True)
    if launch:
        open_in_atlas(path, host, port)
    elif not atlas_installed():
        click.echo(f"to explore it: {ATLAS_HINT}, then embedding-atlas {' '.join(atlas_args(path, host, port))}",
                   err=True)


COMMANDS = [browse, atlas]
