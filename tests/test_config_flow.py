"""Following the config from ``study/runner.py: run_study``: no call path goes back and forth between modules.

The measure: during a whole (micro) study, run in this process, every call into contrastlab that
receives the config or one of its sections, and the path of modules from ``run_study`` down to
it (consecutive frames of one module count once). A module that appears k times on such a path
was left and returned to k − 1 times.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter

from contrastlab.study.runner import run_study
from helpers import micro_config

MOST_RETURNS = 2


def config_objects(config) -> set[int]:
    """ids of the config and of every section (dataclass) inside it."""
    found, stack = set(), [config]
    while stack:
        obj = stack.pop()
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            found.add(id(obj))
            stack += [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    return found


def module_path(frame) -> tuple[str, ...]:
    """The contrastlab modules from run_study down to ``frame``, consecutive repeats merged."""
    modules: list[str] = []
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("contrastlab") and (not modules or modules[-1] != name):
            modules.append(name)
        if frame.f_code.co_name == "run_study" and name == "contrastlab.study.runner":
            break
        frame = frame.f_back
    return tuple(reversed(modules))


def test_the_config_never_returns_to_a_module_more_than_twice(tmp_path):
    config = micro_config("launcher.kind=sequential")  # every unit in this process, where the profiler sees it
    watched = config_objects(config)
    paths: set[tuple[str, ...]] = set()

    def on_call(frame, event, arg):
        if event != "call" or not frame.f_globals.get("__name__", "").startswith("contrastlab"):
            return
        code = frame.f_code
        arguments = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        if any(id(frame.f_locals.get(name)) in watched for name in arguments):
            paths.add(module_path(frame))

    sys.setprofile(on_call)
    try:
        run_study(config, tmp_path / "run", build_report=False)
    finally:
        sys.setprofile(None)
    assert any("contrastlab.train.pretrain" in p for p in paths) and any("contrastlab.train.finetune" in p for p in paths)
    returns = {path: max(Counter(path).values()) - 1 for path in paths}
    assert max(returns.values()) <= MOST_RETURNS, max(returns, key=returns.get)
