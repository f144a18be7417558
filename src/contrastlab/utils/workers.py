"""Worker processes, forked from a server that has imported what they need.

A spawned worker is a fresh interpreter that imports torch and the stages (~2 s) or matplotlib
before its first task, and every pool pays that again. multiprocessing's "forkserver" imports
them once, in a process that runs no torch code, and forks each worker from it: no OpenMP thread
pool or CUDA state is copied (why plain "fork" is unsafe once torch has computed). The server
starts with the first pool of this process and serves every later one. On Linux only: elsewhere
workers are spawned (:func:`has_fork_server`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Mapping
from multiprocessing.context import BaseContext

# What the workers of this package import: the stages (torch with them) and the report's renderer.
# One list for every pool: the server is started once per process and keeps its imports.
PRELOAD = ("contrastlab.study.launchers", "matplotlib.figure", "matplotlib.backends.backend_agg")

_server_used = False  # whether this process has asked for the fork server (its first pool starts it)


def has_fork_server() -> bool:
    """Linux only: macOS's system frameworks (loaded by torch) are not safe to fork, which is why
    Python spawns there by default; Windows has no fork at all."""
    return sys.platform.startswith("linux") and "forkserver" in mp.get_all_start_methods()


def worker_context() -> BaseContext:
    """The multiprocessing context for worker pools: "forkserver" (preloading :data:`PRELOAD`;
    a module that fails to import is skipped by multiprocessing) on Linux, else "spawn"."""
    global _server_used
    if not has_fork_server():
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))  # no effect once the server runs: it has them
    _server_used = True
    return context


def light_worker_context() -> BaseContext:
    """For workers that need little (the report's renderers): the fork server when this process
    has started it already (a study), else "spawn". A first pool from the server waits for its
    imports (~2 s) before its first worker exists; spawned workers import meanwhile."""
    return worker_context() if _server_used else mp.get_context("spawn")


def start_server() -> None:
    """Start the fork server now (where there is one), so that its imports overlap the caller's."""
    if worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def adopt_environment(environ: Mapping[str, str]) -> None:
    """In a worker: take the environment of the process that made the pool. A forked worker has
    the server's, as it was when the server started; a spawned one has it already."""
    if dict(os.environ) != dict(environ):
        os.environ.clear()
        os.environ.update(environ)
