"""Typed configuration: one dataclass per stage, composed into :class:`StudyConfig`.

The dataclass defaults are the paper protocol of docs/design-notes.md. Presets (YAML files in
``contrastlab/presets``) and user YAML files override them; ``--set key=value`` dotted
overrides come last. Unknown keys and wrong types are :class:`ConfigError` with one line
that names the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from .errors import ConfigError

PAPER_TASKS = [[0, 1, 2, 3, 4], [6, 11, 16, 21, 26], [56, 58, 62, 66, 68], [95, 96, 97, 98, 99]]


@dataclass
class DataConfig:
    """Which datasets, where they live, and how they are sized."""

    pretrain: str = "cifar10"
    downstream: str = "cifar100"
    root: Optional[str] = None  # None: env CONTRASTLAB_DATA, else ~/.cache/contrastlab
    image_size: Optional[int] = None  # None: the dataset's own size
    channels: Optional[int] = None  # None: the dataset's own channel count
    pretrain_per_class: Optional[int] = None  # synth: images generated; real: first k kept
    downstream_train_per_class: Optional[int] = None
    downstream_test_per_class: Optional[int] = None
    seed: int = 0  # generation seed of the synthetic datasets
    # Lists of downstream classes, or "random:K" (K distinct task_ways-way tasks drawn with
    # task_seed) or "superclass:K" (CIFAR-100: K tasks of one superclass each). load_config
    # resolves a string into the lists; tasks_spec keeps what was asked.
    tasks: Any = field(default_factory=lambda: [list(t) for t in PAPER_TASKS])
    task_seed: int = 0
    task_ways: int = 5
    tasks_spec: Optional[str] = None


@dataclass
class ModelConfig:
    encoder: str = "resnet18"
    width: int = 64
    # resnet18's stem: "cifar" (3x3 stride 1, no max-pool) or "imagenet" (7x7 stride 2 + 3x3/2 max-pool, torchvision's)
    stem: str = "cifar"
    projection_dim: int = 128


@dataclass
class OwnOptimizerConfig:
    """Settings of a method that brings its own projector and optimizer recipe (solo-learn's CIFAR
    recipes, scripts/pretrain/cifar/*.yaml). Its lr is ``pretrain.lr.<method>``; its momentum is
    ``pretrain.momentum``; ``pretrain.weight_decay`` and ``pretrain.warmup_epochs`` are replaced by
    the fields below."""

    projector_hidden: int = 2048
    projector_out: int = 2048
    optimizer: str = "lars"  # "lars" (layer-wise adaptive rate, biases and norms excluded) or "sgd"
    lars_eta: float = 0.02  # LARS trust coefficient
    weight_decay: float = 1e-4
    warmup_epochs: int = 10  # linear warm-up, then the cosine schedule of pretrain.min_lr_ratio


@dataclass
class ByolConfig(OwnOptimizerConfig):
    projector_hidden: int = 4096
    projector_out: int = 256
    predictor_hidden: int = 4096
    tau_base: float = 0.99  # EMA coefficient of the target, cosine from tau_base to tau_final over the steps
    tau_final: float = 1.0
    weight_decay: float = 1e-5


@dataclass
class SimSiamConfig(OwnOptimizerConfig):
    predictor_hidden: int = 512
    optimizer: str = "sgd"
    weight_decay: float = 1e-5


@dataclass
class BarlowTwinsConfig(OwnOptimizerConfig):
    lambd: float = 0.0051  # weight of the off-diagonal terms
    scale: float = 0.1  # scale of the whole loss


@dataclass
class VicregConfig(OwnOptimizerConfig):
    sim_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0


@dataclass
class Mocov2Config(OwnOptimizerConfig):
    projector_out: int = 256
    queue_size: int = 32768  # negatives kept from earlier batches (keys of both views are enqueued)
    # BatchNorm in the projector's hidden layer (solo-learn's MoCo v2+ has none). Narrow encoders start
    # with nearly parallel features, and a queue of such keys gives no gradient to spread them.
    projector_bn: bool = False
    tau_base: float = 0.99  # EMA coefficient of the key encoder, cosine from tau_base to tau_final
    tau_final: float = 0.999
    optimizer: str = "sgd"


# The methods with a settings section of their own (pretrain.<name>); only a method's own section
# enters its pretraining unit's key, so adding one never changes the keys of the others.
METHOD_SECTIONS = ("byol", "simsiam", "barlow_twins", "vicreg", "mocov2")


@dataclass
class PretrainConfig:
    epochs: int = 200
    batch_size: int = 256
    lr: Dict[str, float] = field(default_factory=lambda: {"simclr": 0.05, "supcon": 0.05, "supce": 0.2, "byol": 1.0, "simsiam": 0.5,
                                                          "barlow_twins": 0.3, "vicreg": 0.3, "mocov2": 0.3})
    momentum: float = 0.9
    weight_decay: float = 1e-4
    min_lr_ratio: float = 0.001  # eta_min = eta_max * min_lr_ratio
    warmup_epochs: int = 0
    # Per contrastive method, like lr: short runs want a different τ for SimCLR than for SupCon.
    temperature: Dict[str, float] = field(default_factory=lambda: {"simclr": 0.07, "supcon": 0.07, "mocov2": 0.2})
    base_temperature: Optional[float] = None  # None: equal to the method's temperature
    loss_form: str = "out"  # "out" (SupContrast L_out) or "in"
    views: int = 2  # views per image for the contrastive objectives
    crop_scale_min: float = 0.2
    checkpoint_epochs: List[int] = field(default_factory=list)  # besides epoch 0 and the last
    checkpoint_every: int = 10  # resume granularity, in epochs (0: only checkpoint_epochs)
    sync_bn: bool = False  # SyncBatchNorm under torchrun
    # torch.compile of the training step (falls back to eager when it fails). Measured on 2 CPU
    # cores: compiling costs more than it saves in a quick run; worth trying for long GPU runs.
    compile: bool = False
    # Original behaviours (docs/design-notes.md), corrected by default:
    # "dataset": the train split's mean/std; "original": its mean with the std (0.2023, 0.1994, 0.2010)
    # hard-coded in SupContrast's main_supcon.py (3-channel data only).
    normalization: str = "dataset"
    # "before_min": cos(π e/E), the last epoch one step short of eta_min; "at_min": cos(π e/(E-1)), the original's.
    schedule_end: str = "before_min"
    byol: ByolConfig = field(default_factory=ByolConfig)
    simsiam: SimSiamConfig = field(default_factory=SimSiamConfig)
    barlow_twins: BarlowTwinsConfig = field(default_factory=BarlowTwinsConfig)
    vicreg: VicregConfig = field(default_factory=VicregConfig)
    mocov2: Mocov2Config = field(default_factory=Mocov2Config)


@dataclass
class FinetuneConfig:
    mode: str = "linear"  # "linear": frozen encoder (the paper); "full": fine-tune everything
    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0  # the paper's text says 1e-4, its code uses 0
    min_lr_ratio: float = 0.008  # cosine from 0.1 down to 0.1 * 0.2**3
    knn_k: int = 20
    analysis_split: str = "train"  # split whose predictions are snapshotted
    # "pretrain": keep the encoder's input normalization; "downstream": replace it by the downstream
    # train split's mean/std (the original) for the probe and every analysis of it.
    normalization: str = "pretrain"
    schedule_end: str = "before_min"  # as pretrain.schedule_end


@dataclass
class LandscapeConfig:
    enabled: bool = True
    grid: int = 51  # points per axis
    span: float = 1.0  # the grid covers [-span, span]^2
    samples: Optional[int] = None  # None: the whole analysis split
    params: str = "all"  # "all" (encoder + probe) or "probe"
    batch_size: Optional[int] = None  # None ("auto"): study/context.py AUTO_BATCH_SIZES
    seed: int = 0
    # "shared": every model's directions drawn with ``seed``; "per_model": a seed derived from
    # ``seed`` and the model (method, pretraining seed, task), as the original drew them per model.
    direction_seed: str = "shared"
    ignore: str = "biasbn"  # "biasbn": biases and BN γ/β get no direction (Li et al.); "none": they move too
    normalization: str = "filter"  # "filter" | "layer" | "none" (analysis/directions.py)
    compare_seeding: bool = False  # also compute the surface with the other direction seeding (doubles the cost)


@dataclass
class SharpnessConfig:
    enabled: bool = True
    samples: Optional[int] = 512
    top_k: int = 1
    iters: int = 20
    trace_samples: int = 20
    params: str = "all"
    # "filter": also the scale-invariant Hessian S H S in filter-normalized coordinates (the
    # curvature along the landscape's directions); "none": the raw Hessian only.
    normalization: str = "filter"
    tol: float = 1e-4  # Lanczos stops when the top-k Ritz values change by less than this (relative)
    batch_size: Optional[int] = None  # samples per Hessian-vector-product batch; None ("auto"): study/context.py AUTO_BATCH_SIZES
    seed: int = 0


@dataclass
class RobustnessConfig:
    enabled: bool = True
    attacks: List[str] = field(default_factory=lambda: ["fgsm", "pgd"])
    eps_255: List[float] = field(default_factory=lambda: [float(k) for k in range(16)])  # eps * 255
    pgd_steps: int = 10
    samples: Optional[int] = None
    space: str = "pixel"  # "normalized" reproduces the original study's FGSM
    compare_spaces: bool = False  # also run FGSM in the other space (fgsm_<space>.csv) for the report's comparison
    batch_size: Optional[int] = None  # None ("auto"): study/context.py AUTO_BATCH_SIZES
    seed: int = 0


@dataclass
class GeometryConfig:
    enabled: bool = True
    n_components: int = 3
    raw_probabilities: bool = True  # also report t_w with the original script's raw-p formula
    # InPCA inputs: "one" P* point (ours) or "per_seed" (one P* copy per seed, as the original's script)
    truth_copies: str = "one"
    compare_inputs: bool = True  # also compute the map with the other truth_copies (cheap) for the report


@dataclass
class TrajectoryConfig:
    """Beyond the paper: the finetune stage's linear probe fitted on saved pretraining checkpoints."""

    enabled: bool = True
    epochs: Optional[List[int]] = None  # pretraining epochs probed; None: every saved checkpoint
    # With epochs None: at most this many saved checkpoints, evenly spaced, first and last included (None: all).
    max_checkpoints: Optional[int] = None
    knn: bool = True  # also the k-NN accuracy (finetune.knn_k) on each checkpoint's features
    progress: bool = True  # also the final progress t_w of each checkpoint's probe


@dataclass
class RepresentationConfig:
    """Beyond the paper: CKA between encoders per task; alignment, uniformity, effective rank per encoder."""

    enabled: bool = True
    samples: Optional[int] = 500  # class-balanced analysis-split samples per task for CKA (None: all)
    debiased: bool = False  # the unbiased HSIC estimator in CKA
    pairs: int = 256  # pretraining images, each augmented twice, for alignment / uniformity / rank
    seed: int = 0  # which images and which augmentations


@dataclass
class AnalysisConfig:
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)
    sharpness: SharpnessConfig = field(default_factory=SharpnessConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    pretraining_trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    representation: RepresentationConfig = field(default_factory=RepresentationConfig)


@dataclass
class ClaimsConfig:
    """Thresholds of the paper's three claims, each tested with three outcomes (report/claims.py)."""

    flatness_margin: float = 2.0  # claim 1: sharpness ratios within [1/m, m] count as "similarly flat"
    robustness_eps_max_255: float = 8.0  # claim 3: area under accuracy-vs-eps over [0, this/255] (pixel units)
    # families' transfer claim: "B transfers as well as A" when probe accuracies agree within ± this many points (TOST)
    accuracy_margin: float = 1.0
    adjust: str = "holm"  # multiplicity over all claims tested together: "holm" (family-wise) or "none"


@dataclass
class ReportConfig:
    confidence: float = 0.95  # level of every confidence interval and test in the report
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)


@dataclass
class LauncherConfig:
    kind: str = "sequential"  # "sequential", "local" or "slurm"
    jobs: int = 1
    partition: Optional[str] = None
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    time_minutes: int = 240
    mem_gb: int = 32
    slurm_options: Dict[str, str] = field(default_factory=dict)  # extra sbatch options, e.g. {account: proj, qos: high}


@dataclass
class LogConfig:
    """Where training curves go besides metrics.csv / history.csv; never part of a unit's key."""

    # TensorBoard event files in each pretrain / finetune unit's tensorboard/ folder
    # (needs the optional extra: pip install 'contrastlab[tensorboard]').
    tensorboard: bool = False


@dataclass
class StudyConfig:
    name: str = "paper"
    # Built-in method names, or encoders trained elsewhere as mappings {name, family, checkpoints, mean, std}
    # (study/external.py; README "Compare your own checkpoints").
    methods: List[Any] = field(default_factory=lambda: ["simclr", "supcon", "supce"])
    seeds: List[int] = field(default_factory=lambda: [0, 10, 20, 30])
    random_init_baseline: bool = True  # probe a random encoder of the same architecture too
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    # "auto": bf16 autocast for pretraining on CUDA, fp32 for every analysis and everything on CPU;
    # "fp32": fp32 everywhere (TF32 matmuls on CUDA); "bf16": bf16 autocast everywhere.
    precision: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    log: LogConfig = field(default_factory=LogConfig)


def preset_names() -> list[str]:
    folder = resources.files("contrastlab") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a mapping that repeats a key (plain YAML keeps the last one and
    silently drops the first block: a second ``pretrain:`` would reset the first's settings)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<": merged by the base class
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(f"duplicate key '{key}' at lines {seen[key]} and {line}")
                seen[key] = line
            except TypeError:  # an unhashable key: the base class reports it
                continue
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(yaml.YAMLError):
    pass


def _read_yaml(text: str, origin: str) -> dict:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as exc:
        raise ConfigError(f"{exc} of {origin}; keep one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"malformed YAML in {origin}{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def _preset_source(preset: str) -> tuple[dict, str]:
    """A preset name or a YAML file path -> (mapping, description)."""
    path = Path(preset)
    if preset.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file not found: {preset}")
        return _read_yaml(path.read_text(), str(path)), str(path)
    names = preset_names()
    if preset not in names:
        raise ConfigError(f"unknown preset '{preset}'; valid: {', '.join(names)} (or a path to a .yaml file)")
    text = (resources.files("contrastlab") / "presets" / f"{preset}.yaml").read_text()
    return _read_yaml(text, f"preset '{preset}'"), f"preset '{preset}'"


def _valid_keys(node: Any, dotted: str) -> str:
    parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    obj: Any = StudyConfig
    for part in filter(None, parent.split(".")):
        fields = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
        if part not in fields:
            return ""
        obj = fields[part].default_factory() if fields[part].default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
    if not dataclasses.is_dataclass(obj):
        return ""
    return ", ".join(f.name for f in dataclasses.fields(obj))


def _merge(base: Any, update: Any, origin: str) -> Any:
    try:
        return OmegaConf.merge(base, update)
    except ConfigKeyError as exc:
        key = exc.full_key or str(exc.key)
        valid = _valid_keys(base, key)
        raise ConfigError(f"unknown config key '{key}' in {origin}" + (f"; valid keys here: {valid}" if valid else "")) from None
    except ValidationError as exc:
        raise ConfigError(f"wrong type for config key '{exc.full_key}' in {origin}: {exc.msg.splitlines()[0]}") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid config in {origin}: {str(exc).splitlines()[0]}") from None


def read_config(preset: str = "quick", overrides: list[str] | None = None) -> StudyConfig:
    """The preset plus overrides, typed but not yet checked by :func:`contrastlab.config_checks.check_config`
    (whose checks import torch and the dataset registry, ~2 s). Malformed input fails here already."""
    mapping, origin = _preset_source(preset)
    conf = _merge(OmegaConf.structured(StudyConfig), mapping, origin)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value, e.g. pretrain.epochs=5")
        key, value = item.split("=", 1)
        parsed = _read_yaml(f"v: {value}" if value.strip() else "v: null", f"override '{item}'")["v"]
        update = OmegaConf.create({})
        try:
            OmegaConf.update(update, key.strip(), parsed, force_add=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"invalid override '{item}': {str(exc).splitlines()[0]}") from None
        conf = _merge(conf, update, f"override '{item}'")
    config: StudyConfig = OmegaConf.to_object(conf)  # type: ignore[assignment]
    if isinstance(config.data.tasks, (list, tuple)):  # OmegaConf containers -> plain lists
        config.data.tasks = [list(t) if isinstance(t, (list, tuple)) else t for t in config.data.tasks]
    return config


def to_dict(config: Any) -> dict:
    """A dataclass config (or part) as plain JSON-ready data."""
    return dataclasses.asdict(config)


def config_hash(obj: Any) -> str:
    """Stable short hash of a config or any JSON-ready structure."""
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def to_yaml(config: StudyConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
