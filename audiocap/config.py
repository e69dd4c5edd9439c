"""Training configs: `TrainConfig`, filled from a YAML file, then from `key=value` overrides (values parsed
as YAML), with every key's type and range checked before any work, and the checks `--resume` makes.

    config = load_config(TrainConfig, "configs/clotho_cnn10_rlssr.yaml", ["epochs=10", "model.d_model=512"])
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from audiocap.errors import ConfigError
from audiocap.metrics import METRICS, score_names
from audiocap.model import ModelDimensions


def load_config(cls, yaml_path: str | Path | None, overrides: list[str] = ()):
    """Build dataclass `cls` from a YAML file and `key=value` overrides (`model.d_model=256` for
    nested dict fields). Unknown keys and values of the wrong type raise ConfigError naming them
    and where they came from (the YAML file or the command line)."""
    values: dict = {}
    sources: dict = {}  # top-level key -> where its value was last set, for the error messages
    if yaml_path is not None:
        try:
            values = yaml.safe_load(Path(yaml_path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{yaml_path}: cannot read the config ({err})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{yaml_path}: expected a mapping of key: value at the top level")
        sources = {key: str(yaml_path) for key in values}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        value = yaml.safe_load(text) if text else ""
        *parents, leaf = key.strip().split(".")
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ConfigError(f"command-line override {item!r}: {parent} is not a mapping of keys")
        target[leaf] = value
        sources[key.strip().split(".")[0]] = f"command-line override {item!r}"
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        source = sources.get(key, "config")
        if key not in fields:
            raise ConfigError(f"{source}: unknown config key {key!r}; valid keys: {', '.join(fields)}")
        values[key] = _check_type(key, value, hints[key], source)
    return cls(**values)


def _check_type(key: str, value, hint, source: str):
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            try:  # YAML reads `1` as an int and `3e-4` (no dot) as a string
                return float(value)
            except ValueError:
                pass
        if origin is not type(None) and isinstance(value, origin) and not (origin is int and isinstance(value, bool)):
            return value
    where = f"{source}: " if source else "config key "
    raise ConfigError(f"{where}{key}={value!r} should be of type {_type_name(hint)}")


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint)


# Allowed values of TrainConfig's numeric keys (None is always allowed where the key is optional).
_RULES = {"> 0": lambda v: v > 0, "≥ 0": lambda v: v >= 0, "in [0, 1)": lambda v: 0 <= v < 1,
          "in [0, 1]": lambda v: 0 <= v <= 1}
TRAIN_CONFIG_RANGES = {
    "epochs": "> 0", "text_epochs": "≥ 0", "batch_size": "> 0", "grad_accum_steps": "> 0", "early_stopping_patience": "≥ 0",
    "learning_rate": "> 0", "encoder_learning_rate": "> 0",
    "crop_seconds": "> 0", "grad_clip": "> 0", "val_beam_size": "> 0", "min_word_count": "> 0",
    "warmup_steps": "≥ 0", "weight_decay": "≥ 0", "rlssr_weight": "≥ 0", "mixup_alpha": "≥ 0",
    "time_masks": "≥ 0", "time_mask_width": "≥ 0", "feature_masks": "≥ 0", "feature_mask_width": "≥ 0",
    "label_smoothing": "in [0, 1)", "encoder_dropout": "in [0, 1)", "min_lr_ratio": "in [0, 1]",
}


def check_ranges(config, ranges: dict[str, str]) -> None:
    """ConfigError for the first key of `config` outside its range (e.g. epochs=0, which would train
    nothing and then fail when it looks for the best epoch)."""
    for key, rule in ranges.items():
        value = getattr(config, key)
        if value is not None and not _RULES[rule](value):
            raise ConfigError(f"config key {key}={value!r}: must be {rule}")


def check_model_options(model: dict) -> dict:
    """`model:` (fields of ModelDimensions but the two the data decide), checked like the top-level keys:
    types, then the values the model's layers accept. Returns them with ints converted where a float is due.
    Checked when the config is read, so a typo fails before any feature is extracted."""
    hints = typing.get_type_hints(ModelDimensions)
    allowed = [f.name for f in dataclasses.fields(ModelDimensions) if f.name not in ("n_audio_features", "n_vocab")]
    checked = {}
    for key, value in model.items():
        if key not in allowed:
            raise ConfigError(f"unknown config key model.{key}; valid keys: {', '.join(sorted(allowed))}")
        checked[key] = _check_type(f"model.{key}", value, hints[key], source="")
    dims = {f.name: f.default for f in dataclasses.fields(ModelDimensions) if f.name in allowed} | checked
    minimum = {"d_model": 2, "n_heads": 1, "n_encoder_layers": 0, "n_decoder_layers": 0, "d_ff": 1,
               "max_audio_frames": 1, "max_caption_tokens": 2, "rlssr_hidden": 0}  # <bos> + ≥ 1 word
    for key, low in minimum.items():
        if dims[key] < low:
            raise ConfigError(f"config key model.{key}={dims[key]!r}: must be at least {low}")
    if not 0 <= dims["dropout"] < 1:
        raise ConfigError(f"config key model.dropout={dims['dropout']!r}: must be in [0, 1)")
    if dims["d_model"] % 2 or dims["d_model"] % dims["n_heads"]:  # even: sinusoidal positions come in sin/cos pairs
        raise ConfigError(f"config keys model.d_model={dims['d_model']} and model.n_heads={dims['n_heads']}: "
                          "d_model must be even and divisible by n_heads (e.g. d_model=256, n_heads=4)")
    return checked


def model_dimensions(config, n_audio_features: int, n_vocab: int) -> ModelDimensions:
    """ModelDimensions from `config.model`; the data decide the input size and the vocabulary."""
    model = check_model_options(config.model)  # again: `config.model` may change after init
    rlssr_off = {"rlssr_hidden": 0} if config.rlssr_weight == 0 else {}  # no unused head under DDP
    return ModelDimensions(**{**model, **rlssr_off}, n_audio_features=n_audio_features, n_vocab=n_vocab)


def check_same_config(saved: dict, config) -> None:
    """`--resume` continues the run of checkpoint config `saved` only with the same `config` (a dataclass)."""
    # a key added to the dataclass after the run started is unchanged when it keeps its default
    defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                for f in dataclasses.fields(config)}
    current = dataclasses.asdict(config)
    # where the run's files live may change between interruption and --resume (a moved out_dir, another disk)
    changed = [k for k in current if k not in ("out_dir", "cache_dir") and saved.get(k, defaults.get(k)) != current[k]]
    if changed:
        raise ConfigError(f"--resume with a different config (changed: {', '.join(changed)}); "
                          "resume with the config of the interrupted run, or start a new out_dir")


@dataclass
class TrainConfig:
    # data: a CSV `file_name,caption_1..caption_N` (Clotho's shape) or an AudioCaps CSV, and a folder of audio
    train_csv: str = ""
    train_audio_dir: str = ""
    val_csv: str = ""
    val_audio_dir: str = ""
    out_dir: str = "runs/clotho"
    cache_dir: str = "cache/features"  # encoder frames, computed once per (encoder weights, file)
    skip_bad_items: bool = False  # train on the usable rows of a CSV with missing/corrupt audio
    # audio encoder; see `audiocap encoders` for the names
    encoder: str = "panns-cnn10"
    encoder_checkpoint: str | None = None
    encoder_options: dict = field(default_factory=dict)  # e.g. {pretrained: false}: random weights (ablation)
    # fine-tuning: the encoder trains with the captioner, on waveforms (no feature cache: it runs every step)
    finetune_encoder: bool = False  # False: frozen, its frames computed once and cached
    encoder_learning_rate: float | None = None  # None = learning_rate; smaller keeps more of the pretraining
    crop_seconds: float | None = None  # train on random crops of clips (bounds memory); validation: whole clips
    # the fine-tuned encoder's batch norm: "batch" = statistics of each process's batch; "sync" = of the global
    # batch across DDP processes (SyncBatchNorm, CUDA only); "frozen" = the pretrained running statistics
    # (scale/shift still train; exact under DDP on any device); "auto" = sync under DDP on CUDA, else batch
    encoder_batchnorm: str = "auto"
    encoder_dropout: float | None = None  # None = the encoder's own (PANNs: 0.2 after every conv block)
    # captioning model: fields of model.ModelDimensions (input size and vocabulary are filled in)
    model: dict = field(default_factory=dict)
    min_word_count: int = 1
    # decoder pretraining on caption text alone, before the audio (text_pretraining.py): CSV paths, passes
    text_captions: list = field(default_factory=list)
    text_epochs: int = 0
    # loss
    label_smoothing: float = 0.1
    rlssr_weight: float = 1.0  # λ; 0 turns RLSSR off (the ablation) and drops the head
    rlssr_loss: str = "l2"  # distance between reconstruction and encoder latent: "l1" or "l2"
    rlssr_stop_gradient: bool = True  # the encoder latent is a fixed target (see model.rlssr_loss)
    # augmentation of the encoder frames
    time_masks: int = 2
    time_mask_width: int = 8
    feature_masks: int = 2
    feature_mask_width: int = 64
    mixup_alpha: float = 0.0  # 0 = off
    # optimisation
    epochs: int = 30
    batch_size: int = 32  # per process
    grad_accum_steps: int = 1  # batches per optimizer step: the update of one batch grad_accum_steps times larger
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 500
    lr_decay: str = "cosine"  # "cosine", "linear" or "none"
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    # validation and model selection
    val_metrics: list = field(default_factory=lambda: ["bleu", "rouge_l", "cider_d"])  # audiocap.metrics names
    best_metric: str = "cider_d"  # a score they produce (e.g. bleu_4; higher is better), or "loss"
    val_beam_size: int = 1
    early_stopping_patience: int = 0  # stop after this many epochs without a better best_metric; 0 = never
    # system
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda"
    bf16: bool = False  # bfloat16 autocast of the forward pass
    fp16_model_file: bool = False  # store the final model file's weights in float16 (half the size)

    def __post_init__(self):
        for key in ("train_csv", "train_audio_dir", "val_csv", "val_audio_dir"):
            if not getattr(self, key):
                raise ConfigError(f"config key {key!r} is required (a Clotho-format CSV / audio folder)")
        choices = {"rlssr_loss": ("l1", "l2"), "lr_decay": ("cosine", "linear", "none"),
                   "encoder_batchnorm": ("auto", "batch", "sync", "frozen"), "device": ("auto", "cpu", "cuda")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"config key {key}={getattr(self, key)!r}: choose one of {', '.join(allowed)}")
        check_ranges(self, TRAIN_CONFIG_RANGES)
        if bool(self.text_captions) != (self.text_epochs > 0):
            raise ConfigError("config keys text_captions and text_epochs go together: give caption CSVs and "
                              "text_epochs > 0 to pretrain the decoder on text, or neither")
        self.model = check_model_options(self.model)  # before any feature is extracted
        for name in self.val_metrics:
            if name not in METRICS:
                raise ConfigError(f"config key val_metrics: unknown metric {name!r}; choose from {', '.join(METRICS)}")
        if self.best_metric != "loss" and self.best_metric not in score_names(self.val_metrics):
            raise ConfigError(f"config key best_metric={self.best_metric!r} is not computed: choose one of "
                              f"{', '.join(score_names(self.val_metrics) + ['loss'])}, or add its metric to "
                              "val_metrics (e.g. bleu for bleu_4)")
