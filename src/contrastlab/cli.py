"""The ``contrastlab`` command line: a thin layer over the study and the stages.

Every user error (unknown preset or key, missing dataset, foreign checkpoint, ...) is printed
as one line on stderr with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional

import typer

from .config import read_config
from .config_checks import check_config, load_config
from .errors import ConfigError, ContrastlabError, Interrupted, Terminated

app = typer.Typer(help=__doc__.splitlines()[0] if __doc__ else None, no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Datasets: download CIFAR, inspect any registered dataset.", no_args_is_help=True)
analyze_app = typer.Typer(help="Run one analysis on a trained encoder + probe.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(analyze_app, name="analyze")

UNIT_BUDGET = 10_000  # a larger study runs only with --yes
PRESET_HELP = "preset name (quick, paper, fmnist-digits) or a path to a YAML file"
SET_HELP = "dotted config override, e.g. --set pretrain.epochs=5 (repeatable)"


def _say(text: str) -> None:
    typer.echo(text)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="log progress details to stderr")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
# over 8 parameters on purpose: each is one command-line option of `contrastlab study`
def study(
    preset: str = typer.Option("quick", "--preset", "-p", help=PRESET_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="run directory (created; an existing one is resumed)"),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    force: bool = typer.Option(False, "--force", help="run into a directory of another config: reuse what matches, recompute the rest"),
    launcher: Optional[str] = typer.Option(None, "--launcher", help="sequential (default), local or slurm"),
    jobs: Optional[int] = typer.Option(None, "--jobs", help="units run at once by the local launcher"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show the progress display"),
    yes: bool = typer.Option(False, "--yes", help="run a study of more than 10,000 units (UNIT_BUDGET)"),
    until_decided: bool = typer.Option(False, "--until-decided", help="add seeds round by round until every claim is decided"),
    max_seeds: Optional[int] = typer.Option(None, "--max-seeds", help="with --until-decided: the most seeds per method"),
    max_hours: Optional[float] = typer.Option(None, "--max-hours", help="with --until-decided: start no round that would end later"),
) -> None:
    """Run the whole study: pretrain -> probes -> analyses -> report. Resumes after any interruption."""
    overrides = list(set_)
    if launcher is not None:
        overrides.append(f"launcher.kind={launcher}")
    if jobs is not None:
        overrides.append(f"launcher.jobs={jobs}")
    config = read_config(preset, overrides)
    if config.launcher.kind == "local" and int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # torchrun's ranks run no pool
        from .utils.workers import start_server

        start_server()  # before the checks, which import torch (~2 s): the server's imports overlap them
    config = check_config(config)
    from .distributed import init_from_env, rank
    from .study.plan import count_units
    from .study.runner import run_study

    units = count_units(config)  # arithmetic, before any unit is planned or any file written
    if units > UNIT_BUDGET and not yes:
        raise ConfigError(f"this study has {units:,} units (more than {UNIT_BUDGET:,}; check data.tasks, seeds and methods); "
                          "pass --yes to run it")
    init_from_env(config.device)  # under torchrun: join the process group
    if rank() == 0:
        _say(f"study: {units:,} units (pretraining, probes, analyses) into {out}")
    rounds = ""
    if until_decided or max_seeds is not None or max_hours is not None:
        from .study.sequential import run_sequential_cli

        summary, rounds = run_sequential_cli(config, out, (until_decided, max_seeds, max_hours), force=force, progress=progress)
    else:
        summary = run_study(config, out, force=force, progress=progress and rank() == 0)
    if rank() == 0:
        from .report.build import summary_text

        _say(summary_text(summary, verbose=logging.getLogger().isEnabledFor(logging.INFO)) + rounds)


def _run_single(config, kind: str, out: Path, *, method: str | None = None, seed: int | None = None, task: int | None = None,
                inputs: dict[str, Path] | None = None, progress: bool = True) -> None:
    """Run one stage on its own into ``out`` (locked like a study folder; a manifest is written last).
    Under torchrun (data-parallel pretraining) rank 0 holds the lock and prepares the folder."""
    import contextlib

    from .distributed import barrier, rank
    from .rundir import RunLock
    from .study.context import unit_context
    from .study.plan import single_unit
    from .study.units import prepare_unit_folder, run_stage

    unit = single_unit(config, kind, method=method, seed=seed, task=task,
                       inputs={role: str(Path(p).resolve()) for role, p in (inputs or {}).items()})
    main_rank = rank() == 0
    with RunLock(out) if main_rank else contextlib.nullcontext():
        folder = prepare_unit_folder(unit, out) if main_rank else out
        barrier()
        run_stage(unit_context(unit, config, out, folder, progress))


def _existing_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ContrastlabError(f"{what} not found: {path}")
    return path


@app.command()
def pretrain(
    method: str = typer.Option(..., "--method", "-m", help="a pretraining method: simclr, supcon, supce, mocov2, byol, simsiam, barlow_twins or vicreg"),
    preset: str = typer.Option("quick", "--preset", "-p", help=PRESET_HELP),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory (an existing one is resumed)"),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Pretrain one encoder (resumes from the last complete checkpoint in --out)."""
    from .distributed import init_from_env, rank
    from .train.methods import get_method

    get_method(method)
    config = load_config(preset, list(set_))
    init_from_env(config.device)
    _run_single(config, "pretrain", out, method=method, seed=seed, progress=progress and rank() == 0)
    if rank() == 0:
        from .rundir import ENCODER

        _say(f"encoder: {out / ENCODER}")


def _parse_classes(text: str) -> list[int]:
    try:
        classes = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise ContrastlabError(f"--task must be comma-separated class indices like 95,96,97,98,99, got '{text}'") from None
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ContrastlabError(f"--task needs at least two distinct classes, got '{text}'")
    return classes


def _with_task(overrides: list[str], classes: list[int]) -> list[str]:
    return overrides + [f"data.tasks=[[{','.join(map(str, classes))}]]"]


@app.command()
def finetune(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="encoder: a checkpoint from pretrain, a solo-learn / lightly / "
                                   "torchvision ResNet-18 checkpoint, or package.module:function (docs/encoders.md)"),
    task: str = typer.Option(..., "--task", "-t", help="downstream classes, e.g. 95,96,97,98,99"),
    out: Path = typer.Option(..., "--out", "-o"),
    preset: str = typer.Option("quick", "--preset", "-p", help=PRESET_HELP),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    seed: int = typer.Option(0, "--seed"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fit a linear probe (or, with --set finetune.mode=full, fine-tune everything) on one task."""
    from .rundir import RESULT
    from .study.any_encoder import encoder_label
    from .utils.io import read_json

    classes = _parse_classes(task)
    config = load_config(preset, _with_task(list(set_), classes))
    # a contrastlab checkpoint's method, else the toolkit it came from; any problem is one line naming the file or function
    method = encoder_label(checkpoint)
    _run_single(config, "finetune", out, method=method, seed=seed, task=0, progress=progress, inputs={"encoder": Path(checkpoint).expanduser()})
    result = read_json(out / RESULT)
    _say(f"val accuracy {result['val_accuracy']:.4f}, k-NN accuracy {result['knn_accuracy']:.4f}; results in {out}")


def _parse_eps(text: str) -> list[float]:
    """'1:15' -> 1..15, '0,1,2,4' -> those; in units of 1/255."""
    try:
        if ":" in text:
            lo, hi = (int(v) for v in text.split(":"))
            return [float(v) for v in range(lo, hi + 1)]
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ContrastlabError(f"--eps must look like 1:15 or 0,1,2,4 (units of 1/255), got '{text}'") from None


def _analyze(kind: str, checkpoint: Path, probe: Path, out: Path, preset: str, overrides: list[str], progress: bool) -> None:
    """Run analysis ``kind`` on an encoder + probe given as files, on the probe's task."""
    from .checkpoint import read_checkpoint

    _existing_file(checkpoint, "encoder checkpoint")
    _, meta = read_checkpoint(_existing_file(probe, "probe checkpoint"))
    config = load_config(preset, _with_task(overrides, list(meta["task_classes"])))
    _run_single(config, kind, out, method=meta.get("method"), seed=meta.get("pretrain_seed"), task=0,
                inputs={"encoder": checkpoint, "probe": probe}, progress=progress)
    for path in sorted(p for p in out.iterdir() if p.is_file() and not p.name.startswith(".")):
        _say(f"wrote {path}")


CHECKPOINT_OPTION = typer.Option(..., "--checkpoint", "-c", help="encoder checkpoint from pretrain")
PROBE_OPTION = typer.Option(..., "--probe", help="probe checkpoint (probe.safetensors) from finetune")


@analyze_app.command("robustness")
def analyze_robustness(
    checkpoint: Path = CHECKPOINT_OPTION,
    probe: Path = PROBE_OPTION,
    eps: str = typer.Option("0:15", "--eps", help="epsilons in units of 1/255: 1:15 or 0,1,2,4"),
    out: Path = typer.Option(..., "--out", "-o"),
    attack: List[str] = typer.Option(["fgsm", "pgd"], "--attack", help="fgsm and/or pgd (repeatable)"),
    preset: str = typer.Option("quick", "--preset", "-p", help=PRESET_HELP),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """FGSM / PGD accuracy and loss against epsilon (pixel space) on the probe's task."""
    eps_255 = ",".join(f"{e:g}" for e in _parse_eps(eps))
    overrides = list(set_) + [f"analysis.robustness.eps_255=[{eps_255}]", f"analysis.robustness.attacks=[{','.join(attack)}]"]
    _analyze("robustness", checkpoint, probe, out, preset, overrides, progress)


def _add_analysis_command(kind: str, help_text: str) -> None:
    """Register ``analyze KIND``: an analysis whose settings come only from the config (analysis.KIND.*)."""
    def command(
        checkpoint: Path = CHECKPOINT_OPTION,
        probe: Path = PROBE_OPTION,
        out: Path = typer.Option(..., "--out", "-o"),
        preset: str = typer.Option("quick", "--preset", "-p", help=PRESET_HELP),
        set_: List[str] = typer.Option([], "--set", help=SET_HELP),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        _analyze(kind, checkpoint, probe, out, preset, list(set_), progress)

    command.__name__ = command.__qualname__ = f"analyze_{kind}"
    command.__doc__ = help_text
    analyze_app.command(kind)(command)


_add_analysis_command("landscape", "The 2-D loss landscape around encoder + probe (settings: analysis.landscape.*).")
_add_analysis_command("sharpness", "Top Hessian eigenvalues and trace, raw and filter-normalized (settings: analysis.sharpness.*).")


@analyze_app.command("all")
# over 8 parameters on purpose: each is one command-line option of `contrastlab analyze all`
def analyze_all(
    encoder: str = typer.Option(..., "--encoder", "-e", help="a contrastlab encoder checkpoint, a solo-learn / lightly / "
                                "torchvision ResNet-18 checkpoint, or package.module:function (docs/encoders.md)"),
    task: List[str] = typer.Option(..., "--task", "-t", help="downstream classes, e.g. 0,1,2 (repeatable: one task each)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (a run directory; an existing one is resumed)"),
    preset: str = typer.Option("quick", "--preset", "-p", help=PRESET_HELP),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    seed: int = typer.Option(0, "--seed", help="seed of the probe"),
    mean: Optional[str] = typer.Option(None, "--mean", help="the input normalization the encoder was trained with, one value per "
                                       "channel, e.g. 0.4914,0.4822,0.4465 (default: its own for a contrastlab checkpoint, else "
                                       "the statistics of each task's training split)"),
    std: Optional[str] = typer.Option(None, "--std", help="with --mean: e.g. 0.247,0.243,0.261"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """The probe and every analysis (landscape, sharpness, robustness, progress/InPCA) of one encoder from anywhere,
    then its report: `contrastlab report OUT` renders it again."""
    from .study.any_encoder import analyze_encoder
    from .study.encoders import encoder_spec, is_contrastlab_checkpoint
    from .utils.io import read_json

    tasks = [_parse_classes(t) for t in task]
    overrides = list(set_) + ["data.tasks=[" + ",".join(f"[{','.join(map(str, c))}]" for c in tasks) + "]"]
    if is_contrastlab_checkpoint(encoder_spec(encoder)):  # the model settings the checkpoint was trained with
        arch = read_json(Path(encoder).with_suffix(".json")).get("architecture") or {}
        overrides += [f"model.{k}={arch[k]}" for k in ("encoder", "width", "stem") if arch.get(k) is not None]
    config = load_config(preset, overrides)
    normalization = _parse_normalization(mean, std)
    analyze_encoder(config, encoder, out, seed=seed, progress=progress, normalization=normalization)
    from .report.build import build_report

    _say(f"report: {build_report(out)}")


def _parse_normalization(mean: str | None, std: str | None) -> tuple[list[float], list[float]] | None:
    """--mean/--std as two lists of floats (None when neither is given)."""
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise ContrastlabError("give --mean and --std together (the normalization the encoder was trained with)")
    try:
        values = [[float(v) for v in text.split(",") if v.strip()] for text in (mean, std)]
    except ValueError:
        raise ContrastlabError(f"--mean/--std must be comma-separated numbers like 0.4914,0.4822,0.4465, got '{mean}' / '{std}'") from None
    if len(values[0]) != len(values[1]) or not values[0] or min(values[1]) <= 0:
        raise ContrastlabError(f"--mean and --std need one value per channel each, std > 0; got '{mean}' / '{std}'")
    return values[0], values[1]


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a study's run directory"),
    compare: Optional[Path] = typer.Option(None, "--compare", help="another run directory: add a section comparing their headline numbers"),
    jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="processes rendering figures (default: up to 4, one per CPU)"),
    allow_changed: bool = typer.Option(False, "--allow-changed", help="build the report without the units whose files "
                                       "changed since they finished (each named in a warning) instead of refusing"),
) -> None:
    """Rebuild the report of a study from its stored results (nothing is recomputed). Every file it reads
    is checked against its unit's manifest first."""
    from .report.build import build_report

    path = build_report(run_dir, compare=compare, workers=jobs, allow_changed=allow_changed)
    _say(f"report: {path}")


@app.command()
def verify(run_dir: Path = typer.Argument(..., help="a run directory")) -> None:
    """Check every finished unit's files against its manifest (sha256); exit 1 naming the changed or missing ones."""
    from .rundir import verify_run

    problems, checked = verify_run(run_dir)
    for unit_id, problem in problems:
        typer.echo(f"{unit_id}: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    _say(f"{checked} units verified: every file matches its manifest")


@data_app.command("download")
def data_download(
    name: str = typer.Argument(..., help="cifar10 or cifar100"),
    root: Optional[Path] = typer.Option(None, "--root", help="folder to download into (default: $CONTRASTLAB_DATA or ~/.cache/contrastlab)"),
) -> None:
    """Download a CIFAR archive from its official URL and verify its checksum."""
    from .data.cifar import download

    path = download(name, root, progress=True)
    _say(f"{name}: {path}")


@data_app.command("info")
def data_info(
    name: str = typer.Argument(..., help="a registered dataset, e.g. synth10, cifar10"),
    root: Optional[Path] = typer.Option(None, "--root"),
    split: str = typer.Option("train", "--split"),
) -> None:
    """Load a dataset and print its size, image shape, classes and normalization."""
    from .data import load_dataset

    ds = load_dataset(name, split, root)
    _say(f"{name} [{split}]: {len(ds)} images of {ds.images.shape[1:]} in {ds.num_classes} classes; "
         f"mean {tuple(round(m, 4) for m in ds.mean)}, std {tuple(round(s, 4) for s in ds.std)}")


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted()


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


INTERRUPTED = "interrupted; finished units are kept, run the same command again to resume"
TERMINATED = "terminated (SIGTERM); finished units are kept, run the same command again to resume"


def main() -> None:
    # typer turns a KeyboardInterrupt into a silent exit 130; Ctrl-C raises Interrupted instead,
    # which passes through typer to the one line below.
    # SIGTERM (kill, Slurm's preemption and time limit) the same way, as Terminated: exit 128 + 15.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _interrupt) if main_thread else None
    previous_term = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        app()
    except Terminated:
        typer.echo(TERMINATED, err=True)
        sys.exit(143)
    except (Interrupted, KeyboardInterrupt):
        typer.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except ContrastlabError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except FileNotFoundError as exc:
        typer.echo(f"error: file not found: {exc.filename or exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # permission, read-only file system, disk full outside the atomic writers
        typer.echo(f"error: cannot write or read {exc.filename or ''}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)


if __name__ == "__main__":
    main()
