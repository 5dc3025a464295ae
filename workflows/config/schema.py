"""Structured-config schemas: the shape of every config group, registered in Hydra's ConfigStore.

Values live in `conf/*.yaml`; these dataclasses make a typo'd key or a wrong type fail at
composition time, naming the full key (`stages.dpo.trainr`). Free-form mappings are kept only
where the keys belong to another project (TRL's trainer fields, DeepSpeed's JSON, LlamaConfig);
those are checked against that project's own field list by the planner.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any, Optional

from omegaconf import MISSING

from posttrain.registry import STAGE_TYPES

VERSION_BASE = "1.3"  # Hydra's version_base: set here and nowhere else


@dataclass
class GgufConfig:
    """A GGUF file as the starting checkpoint (posttrain/gguf.py): a path, or a file inside a package."""

    path: str | None = None  # a .gguf file
    package: str | None = None  # an installed Python package that ships the file (found, never imported)
    file: str | None = None  # the file's name inside `package`


@dataclass
class ModelConfig:
    """The pipeline's starting checkpoint (the `checkpoint` node of the DAG)."""

    name_or_path: str | None = None  # hub id or local dir; null builds a model from `config`
    revision: str | None = None  # hub revision (branch, tag or commit) of name_or_path
    tokenizer: str | None = None  # tokenizer dir or hub id; null = name_or_path
    chat_template: str | None = None  # a .jinja file that replaces the tokenizer's chat template
    architecture: str = "LlamaForCausalLM"  # transformers class built from `config`
    config: dict[str, Any] = field(default_factory=dict)  # config kwargs when building from scratch
    trust_remote_code: bool = False
    gguf: GgufConfig | None = None  # convert this GGUF file in the checkpoint stage (name_or_path: null)


@dataclass
class PeftConfig:
    """LoRA settings with peft's own field names; `method: none` trains the full model."""

    method: str = "none"  # none | lora
    r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: Any = "all-linear"  # a list of module names, or "all-linear"
    bias: str = "none"
    use_dora: bool = False
    # After training the adapter is merged so the next stage receives a plain HF model dir.
    merge: bool = True


@dataclass
class SourceConfig:
    """One data source: a local file/folder, a hub dataset id, or an upstream stage's dataset."""

    path: str | None = None  # JSONL/JSON/Parquet/CSV file or folder, or a hub dataset id
    name: str | None = None  # hub dataset config name
    split: str = "train"
    revision: str | None = None
    stage: str | None = None  # use the dataset written by this upstream stage
    weight: float | None = None  # relative share of the training rows in a mixture (posttrain/data/mix.py)
    max_rows: int | None = None  # cap on rows taken from this source (a seeded random sample)
    format: str | None = None  # this source's format when it differs from the data's `format`


@dataclass
class DataConfig:
    """A stage's training (and optional eval) data and the format its rows are in."""

    format: str = MISSING  # messages | prompt_completion | text | preference | unpaired_preference | ...
    sources: list[SourceConfig] = MISSING
    eval_sources: list[SourceConfig] = field(default_factory=list)
    eval_fraction: float = 0.0  # carve an eval split off the training rows instead
    shuffle: bool = True
    seed: int | None = None  # null = the pipeline's seed
    on_invalid: str = "error"  # error | drop


@dataclass
class ResourcesConfig:
    """How a stage's process(es) start; where they run is the launcher's business."""

    runner: str = "auto"  # auto | python | torchrun | deepspeed | srun  (auto: python for 1 process, else torchrun)
    nodes: int = 1
    processes_per_node: int | None = None  # null = one per GPU (gpus_per_node), 1 without GPUs
    gpus_per_node: int | None = None  # what to ask the scheduler for; null = launcher.gpus_per_node
    time: str | None = None  # wall-time limit for schedulers (HH:MM:SS); null = launcher.time


@dataclass
class GateConfig:
    """Run a stage only when an upstream stage's metric is in bounds (posttrain/gates.py)."""

    metric: str | None = None  # <stage>/<metric key>, e.g. sft_eval/sft/accuracy; null = no gate
    min: float | None = None  # the stage runs when metric >= min ...
    max: float | None = None  # ... and metric <= max


@dataclass
class _StageFields:
    """One node of the DAG. Edges come from `policy`, `reference`, data `stage` references, `models`,
    a teacher and a `gate`."""

    type: str = MISSING  # a key of posttrain.registry.STAGE_TYPES
    policy: str = "checkpoint"  # the model this stage starts from: a stage name, `checkpoint`, a dir or hub id
    reference: str | None = None  # dpo/kto frozen reference; null = the policy's starting model
    data: DataConfig | None = None
    trainer: dict[str, Any] = field(default_factory=dict)  # TRL config fields, TRL's own names
    peft: PeftConfig | None = None  # null = the pipeline-wide `peft` group
    deepspeed: dict[str, Any] | None = None  # null = the pipeline-wide `deepspeed` group
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    enabled: bool = True  # false drops the stage (and refuses stages that need it)
    gate: GateConfig = field(default_factory=GateConfig)  # run only when an upstream metric is in bounds
    models: list[str] = field(default_factory=list)  # eval: the models measured (stage names, dirs, hub ids)


# A stage type with its own settings adds `stages.<name>.<type>` (its schema from the registry):
# `stages.eval.eval.max_rows`, `stages.gen.generate.teacher.model`.
StageConfig = make_dataclass(
    "StageConfig", [(name, Optional[t.settings], field(default=None)) for name, t in STAGE_TYPES.items() if t.settings],
    bases=(_StageFields,))
StageConfig.__doc__ = _StageFields.__doc__


@dataclass
class ContainerConfig:
    """The image every stage of a Slurm job runs in (docker/README.md); `image: null` = none."""

    image: str | None = None  # apptainer: a .sif or docker://ref; pyxis: registry#image:tag or a .sqsh
    runtime: str = "apptainer"  # apptainer (`apptainer exec --nv`) | pyxis (`srun --container-image`)
    python: str = "python"  # the interpreter inside the image
    hf_cache: str | None = "~/.cache/huggingface"  # host dir bound at the image's HF_HOME (/cache/huggingface)
    torch_extensions: str | None = "~/.cache/posttrain/torch_extensions"  # bound at /cache/torch_extensions
    mounts: list[str] = field(default_factory=list)  # more binds, `host[:container[:ro]]`
    mount_code: bool = False  # run this checkout's code (bound at its own path) instead of the image's
    args: list[str] = field(default_factory=list)  # extra flags for `apptainer exec` or pyxis' srun


@dataclass
class LauncherConfig:
    """Where stages run. Scheduler settings (partition ... poll_seconds) are for launcher=slurm."""

    name: str = "local"  # local | slurm
    stream_logs: bool = True  # echo stage output on the console (always written to stage.log)
    env: dict[str, str] = field(default_factory=dict)  # extra environment for every stage process
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None  # default wall time of a stage's job; stages.<name>.resources.time wins
    gpus_per_node: int = 0  # default for stages whose resources.gpus_per_node is null
    cpus_per_task: int | None = None  # per srun task: one task per node (torchrun), or per process (srun)
    mem: str | None = None  # per node, e.g. 200G; "0" = all of it
    constraint: str | None = None  # node features, e.g. "h100|a100"
    job_name_prefix: str = "posttrain"  # jobs are named <prefix>-<pipeline>-<stage>
    output: str = "{stage_dir}/stage.log"  # job log (appended); {stage_dir} {stage} {run_dir} {pipeline}, Slurm's %j %x
    extra_sbatch: list[str] = field(default_factory=list)  # more #SBATCH options, e.g. ["--exclusive"]
    setup: list[str] = field(default_factory=list)  # shell lines run before the stage (module load, activate)
    python: str | None = None  # the interpreter on the nodes; null = the submitting one (a shared filesystem)
    container: ContainerConfig = field(default_factory=ContainerConfig)
    wait: bool = False  # follow the submitted jobs to the end and print the summary
    poll_seconds: float = 10.0  # how often `wait` asks Slurm


@dataclass
class TrackingConfig:
    """Experiment tracking. `backend: none` turns it off."""

    backend: str = "mlflow"  # a key of posttrain.tracking.BACKENDS: mlflow | none
    uri: str = "sqlite:///mlflow.db"  # a local SQLite store (relative to the working dir) or http://host:port
    experiment: str | None = None  # null = the pipeline's name
    register: str | None = None  # a stage name: register its final model in the MLflow model registry
    registered_model: str | None = None  # the registered model's name; null = <pipeline>-<stage>


@dataclass
class PipelineConfig:
    """The root config: one pipeline invocation."""

    name: str = MISSING  # set by each conf/pipeline/*.yaml
    run_dir: str = MISSING  # a link per stage (into store_dir) and summary.json go here
    store_dir: str = "outputs/store"  # stage outputs by fingerprint, shared by every run_dir (workflows/store/)
    dry_run: bool = False  # compose, validate and print the plan; train nothing
    force: list[str] = field(default_factory=list)  # stages to re-run although cached: [dpo] or [all]
    wait_for_lock: bool = False  # another run holds run_dir: wait for it instead of stopping (exit 75)
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    deepspeed: dict[str, Any] = field(default_factory=dict)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    stages: dict[str, StageConfig] = field(default_factory=dict)


def register_configs() -> None:
    """Register the schemas so `conf/config.yaml` can extend them (`- schema` in its defaults)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="schema", node=PipelineConfig)
    cs.store(group="model", name="schema", node=ModelConfig)
    cs.store(group="peft", name="schema", node=PeftConfig)
    cs.store(group="launcher", name="schema", node=LauncherConfig)
    cs.store(group="tracking", name="schema", node=TrackingConfig)
    cs.store(group="stage", name="schema", node=StageConfig)
    cs.store(group="data", name="schema", node=DataConfig)
