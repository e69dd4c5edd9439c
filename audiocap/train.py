"""Train a captioning model (`audiocap train CONFIG.yaml`): the recipe of Koh, Xue & Chng (ICASSP 2022).

  1. frames of a frozen pretrained audio encoder (PANNs, aisfx), computed once through the feature cache
     (or, with `finetune_encoder`, the encoder runs on waveforms inside the forward pass and trains too:
     batches.py hides which);
  2. every (clip, caption) pair is a training example; the vocabulary comes from the training captions;
  3. loss = cross-entropy (label-smoothed) + λ · RLSSR (model.caption_loss), with SpecAugment (and
     optionally mixup) on the frames;
  4. AdamW, linear warm-up then cosine/linear decay, gradient clipping (one step per `grad_accum_steps`
     batches);
  5. after every epoch: validation loss and caption metrics; the best epoch by `best_metric` is kept
     (and training stops after `early_stopping_patience` epochs without a better one);
  6. the final artifact is one model file (model_file.save_model) that includes the encoder weights.

Distributed: `torchrun --nproc_per_node=N -m audiocap train CONFIG.yaml` runs one process per
device with DistributedDataParallel; the global batch is `batch_size × N × grad_accum_steps`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from audiocap import model_file
from audiocap.augment import mixup, spec_augment
from audiocap.batches import (CachedFrames, FineTunedEncoder, WaveformPairs, batch_groups, build_encoder, collate,
                              encoder_batchnorm_mode, estimated_frames)
from audiocap.checkpoint import load_checkpoint, lock_out_dir, rng_state, save_checkpoint, set_rng_state
from audiocap.config import TrainConfig, check_same_config, model_dimensions
from audiocap.data.cache import FeatureCache
from audiocap.data.datasets import load_dataset
from audiocap.data.validate import check_items
from audiocap.decoding import DecodingOptions, decode
from audiocap.distributed import Distributed, gradient_sync, setup_distributed
from audiocap.errors import AudiocapError, ConfigError, check_not_too_long
from audiocap.metrics import evaluate
from audiocap.model import AudioCaptioner, ModelDimensions, caption_loss
from audiocap.optim import lr_factor, param_groups
from audiocap.text_pretraining import pretrain_decoder
from audiocap.tokenizer import Tokenizer

__all__ = ["TrainConfig", "train"]


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Run the recipe; returns the path of the final model file (OUT_DIR/model.safetensors)."""
    ddp = setup_distributed(config.device)
    torch.manual_seed(config.seed)  # same initial weights on every rank (DDP also broadcasts them)
    out_dir = Path(config.out_dir)
    autocast = torch.autocast(ddp.device.type, dtype=torch.bfloat16, enabled=config.bf16)
    data = prepare_data(config, ddp, autocast)
    model = AudioCaptioner(data.dims).to(ddp.device)
    optimizer, scheduler = make_optimizer(config, model, data.source, len(data.loader))
    # everything is checked: from here on the run writes into out_dir, which no other run may use meanwhile
    run_lock = lock_out_dir(out_dir) if ddp.is_main else None  # noqa: F841  (held until the process ends)
    run = restore_state(out_dir / "last.pt", config, data, model, optimizer, scheduler, ddp) if resume else Run()
    writer = None
    if ddp.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(out_dir / "tensorboard")
    if config.text_epochs and not resume:  # every process alike (deterministic); checkpointed as epoch 0
        text = pretrain_decoder(config, model, data.tokenizer, ddp.device, show_progress=ddp.is_main)
        if writer:
            tqdm.write(f"text pretraining: {text['captions']} captions, {text['steps']} steps, loss {text['loss']:.3f}")
            log_scalars(writer, 0, {"text/loss": text["loss"], "text/captions": text["captions"]})
        save_state(out_dir / "last.pt", config, data, model, optimizer, scheduler, run, ddp)
    ddp_model = DistributedDataParallel(model) if ddp.enabled else model  # wraps the weights every process has

    for epoch in range(run.epoch, config.epochs):
        if config.early_stopping_patience and epoch - run.best_epoch >= config.early_stopping_patience:
            if ddp.is_main:
                tqdm.write(f"early stopping: no better {config.best_metric} in the {config.early_stopping_patience} "
                           f"epochs since epoch {run.best_epoch}")
            break
        ddp_model.train()
        data.source.train()
        data.sampler.set_epoch(epoch)
        progress = tqdm(data.loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not ddp.is_main)
        for group in batch_groups(progress, config.grad_accum_steps):  # the batches of one optimizer step
            optimizer.zero_grad(set_to_none=True)
            loss, rlssr = train_step(config, group, ddp_model, data.source, ddp, autocast)
            check_finite_loss(loss, run.step, epoch)  # every rank sees the same mean: all stop together
            # one norm over captioner and encoder (a frozen encoder has no gradients to count)
            grad_norm = torch.nn.utils.clip_grad_norm_([*model.parameters(), *data.source.encoder.parameters()],
                                                       config.grad_clip)
            optimizer.step()
            scheduler.step()
            run.step += 1
            if writer:
                progress.set_postfix(loss=f"{loss:.3f}")
                log_scalars(writer, run.step, {"train/loss": loss, "train/rlssr": rlssr,
                                               "train/grad_norm": grad_norm.item(),
                                               "train/lr": scheduler.get_last_lr()[0]})
        if ddp.is_main:  # validation on rank 0: the other ranks hold identical weights
            scores = validate(config, model, data, ddp.device, autocast)
            log_scalars(writer, run.step, {f"val/{name}": value for name, value in scores.items()})
            if run.record(epoch + 1, scores[config.best_metric], higher_is_better=config.best_metric != "loss"):
                save_checkpoint(out_dir / "best.pt", {"model": model.state_dict(),
                                                      "encoder": data.source.state_dict(), "epoch": epoch + 1})
            summary = " ".join(f"{k}={v:.4f}" for k, v in scores.items() if isinstance(v, float))
            tqdm.write(f"epoch {epoch + 1}: {summary}{' (best)' if run.best_epoch == epoch + 1 else ''}")
        run.best_epoch = int(ddp.all_reduce_sum(torch.tensor(run.best_epoch if ddp.is_main else 0, device=ddp.device)))
        run.epoch = epoch + 1
        save_state(out_dir / "last.pt", config, data, model, optimizer, scheduler, run, ddp)

    if writer:
        writer.close()
    return export_model(out_dir, config, data, model, run, ddp)


# ---------------------------------------------------------------------------------------------
# data: (clip, caption) pairs, whose clips are cached frames or waveforms for the fine-tuned encoder


@dataclass
class TrainingData:
    tokenizer: Tokenizer
    dims: ModelDimensions
    source: CachedFrames | FineTunedEncoder  # turns a batch's inputs into frames (batches.py)
    loader: torch.utils.data.DataLoader  # batches (inputs, input lengths, tokens_in, tokens_out)
    sampler: torch.utils.data.DistributedSampler
    val_items: list  # data.datasets.CaptionItem


def prepare_data(config: TrainConfig, ddp: Distributed, autocast) -> TrainingData:
    """Everything that can fail on the data fails here, before any training step or output file."""
    encoder = build_encoder(config).freeze()
    cache = None if config.finetune_encoder else FeatureCache(config.cache_dir)
    train_items = load_dataset(config.train_csv, config.train_audio_dir)
    val_items = load_dataset(config.val_csv, config.val_audio_dir)
    # a cached clip decoded when it was cached: only the others are decoded (one lookup: it hashes the weights)
    decoded = cache.cached(encoder, [it.audio_path for it in train_items + val_items]) if cache else frozenset()
    train_items, val_items = [check_items(items, config.skip_bad_items, progress=ddp.is_main, decoded=decoded,
                                          skip_hint="skip_bad_items=true")
                              for items in (train_items, val_items)]
    tokenizer = Tokenizer.build([c for it in train_items for c in it.captions], config.min_word_count)
    dims = model_dimensions(config, encoder.dim, tokenizer.n_vocab)
    if config.finetune_encoder:
        source, train_clips = finetuning_source(config, encoder, train_items, val_items, dims, ddp, autocast)
    else:
        source, train_clips = cached_source(encoder, cache, train_items, val_items, dims, ddp)
    n_ctx = dims.max_caption_tokens - 1  # room for <bos> (decoder input) / <eos> (target)
    pairs = [(clip, tokenizer.encode(c)[:n_ctx]) for clip, it in zip(train_clips, train_items) for c in it.captions]
    if config.finetune_encoder:
        pairs = WaveformPairs(pairs, encoder.sample_rate, config.crop_seconds)
    sampler = torch.utils.data.DistributedSampler(  # also used for one process: a fixed order per epoch
        pairs, num_replicas=ddp.world_size, rank=ddp.rank, shuffle=True, seed=config.seed)
    loader = torch.utils.data.DataLoader(pairs, config.batch_size, sampler=sampler, collate_fn=collate)
    return TrainingData(tokenizer, dims, source, loader, sampler, val_items)


def cached_source(encoder, cache: FeatureCache, train_items, val_items, dims: ModelDimensions, ddp: Distributed):
    """(CachedFrames, the training clips' frames): rank 0 fills the cache, the others then read it."""
    paths = [it.audio_path for it in train_items + val_items]
    if ddp.is_main:
        frames = cache.get_many(encoder, paths, progress=True)
    ddp.barrier()
    if not ddp.is_main:
        frames = cache.get_many(encoder, paths, progress=False)
    check_clip_frames(paths, [len(f) for f in frames], dims.max_audio_frames)
    return CachedFrames(encoder, frames[len(train_items):]), frames[:len(train_items)]


def finetuning_source(config: TrainConfig, encoder, train_items, val_items, dims: ModelDimensions,
                      ddp: Distributed, autocast):
    """(FineTunedEncoder, the training clips' audio paths)."""
    batchnorm = encoder_batchnorm_mode(config.encoder_batchnorm, ddp)
    if config.encoder_dropout is not None:
        if not hasattr(encoder, "dropout"):
            raise ConfigError(f"encoder_dropout: encoder {config.encoder!r} has no dropout to set; remove the key")
        encoder.dropout = config.encoder_dropout
    # validation encodes whole clips: one too long for the model would fail only after the first epoch
    paths = [it.audio_path for it in train_items + val_items]
    crops = [config.crop_seconds] * len(train_items) + [None] * len(val_items)
    check_clip_frames(paths, estimated_frames(paths, encoder.frame_rate, crops), dims.max_audio_frames,
                      fix="crop_seconds= (training clips; validation captions whole clips), ")
    return FineTunedEncoder(encoder, batchnorm, ddp, autocast), [it.audio_path for it in train_items]


def check_clip_frames(paths: list[Path], n_frames: list[int], max_frames: int, fix: str = "") -> None:
    """Clips whose encoder frames exceed the model's positional table fail before the first step rather than
    at the first batch (or validation) holding one. A clip in both training and validation counts once."""
    lengths = dict(zip(map(str, paths), n_frames))
    check_not_too_long(lengths, max_frames, f"the model covers (model.max_audio_frames={max_frames})",
                       f"set model.max_audio_frames={max(lengths.values())} or more, {fix}or cut the clips shorter",
                       unit="frames")


# ---------------------------------------------------------------------------------------------
# one optimizer step


def make_optimizer(config: TrainConfig, model: AudioCaptioner, source, batches_per_epoch: int):
    """AdamW over the captioner (and a fine-tuned encoder, at `encoder_learning_rate`: typically smaller, to
    adapt the pretrained features gently), and its schedule of learning rates per optimizer step."""
    encoder_lr = config.learning_rate if config.encoder_learning_rate is None else config.encoder_learning_rate
    optimizer = torch.optim.AdamW(param_groups(model, config.learning_rate, config.weight_decay)
                                  + source.param_groups(encoder_lr, config.weight_decay))
    total_steps = config.epochs * math.ceil(batches_per_epoch / config.grad_accum_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(
        step, config.warmup_steps, total_steps, config.lr_decay, config.min_lr_ratio))
    return optimizer, scheduler


def check_finite_loss(loss: float, step: int, epoch: int) -> None:
    """Stop at the first non-finite loss: its gradients would make every weight NaN, and the run would go on
    and save a model of NaN. Nothing of this step is applied or saved; the last checkpoint is intact."""
    if not math.isfinite(loss):
        raise AudiocapError(f"training loss is {loss} at step {step + 1} (epoch {epoch + 1}); stopped before applying "
                            "it, nothing non-finite was saved: check the data (`audiocap validate`) or lower "
                            "learning_rate, then continue from the last epoch with --resume")


def train_step(config: TrainConfig, group: list, ddp_model, source, ddp: Distributed, autocast) -> tuple[float, float]:
    """Gradients of one optimizer step over `group`, its batches (inputs, input lengths, tokens_in, tokens_out):
    tokens_in = <bos> w1..wn, tokens_out = w1..wn <eos>. Returns the step's loss (mean over processes) and RLSSR.

    The cross-entropy is a sum over tokens / the tokens of the *global* batch (all the group's batches on all
    processes, × world size, as DDP averages gradients): N processes × k accumulated batches take exactly the
    step of one process with the combined batch. RLSSR, a mean over clips, is weighted by each batch's share."""
    n_tokens = ddp.all_reduce_sum(torch.tensor(sum(int((b[3] != Tokenizer.pad).sum()) for b in group),
                                               device=ddp.device))
    n_clips = sum(len(b[3]) for b in group)
    loss_sum = rlssr_sum = 0.0
    for i, batch in enumerate(group):
        inputs, input_lengths, tokens_in, tokens_out = (x.to(ddp.device) for x in batch)
        with gradient_sync(i == len(group) - 1, ddp_model, source.module):  # all-reduce on the last only
            frames, frame_lengths = source(inputs, input_lengths)
            frames = spec_augment(frames, frame_lengths, config.time_masks, config.time_mask_width,
                                  config.feature_masks, config.feature_mask_width)
            if config.mixup_alpha > 0:
                frames, frame_lengths = mixup(frames, frame_lengths, config.mixup_alpha)
            with autocast:
                out = ddp_model(frames, frame_lengths, tokens_in)
            loss = caption_loss(out, tokens_out, config.rlssr_weight, config.label_smoothing, config.rlssr_loss,
                                config.rlssr_stop_gradient, n_tokens=n_tokens / ddp.world_size,
                                clip_share=len(tokens_out) / n_clips)  # a Python float: exactly 1.0 alone
            loss.total.backward()
        loss_sum += loss.total.detach()
        rlssr_sum += 0.0 if loss.rlssr is None else loss.rlssr.detach()
    rlssr = None if config.rlssr_weight == 0 else float(rlssr_sum)
    return ddp.all_reduce_sum(loss_sum).item() / ddp.world_size, rlssr


def log_scalars(writer: SummaryWriter, step: int, scalars: dict) -> None:
    for name, value in scalars.items():
        if isinstance(value, (int, float)):
            writer.add_scalar(name, value, step)


# ---------------------------------------------------------------------------------------------
# validation


def validate(config: TrainConfig, model: AudioCaptioner, data: TrainingData, device, autocast) -> dict:
    """Validation loss and caption metrics of this epoch's weights, on whole validation clips."""
    model.eval()
    data.source.encoder.eval()
    frames = data.source.validation_frames(data.val_items)
    n_ctx = data.dims.max_caption_tokens - 1
    pairs = [(f, data.tokenizer.encode(c)[:n_ctx]) for f, it in zip(frames, data.val_items) for c in it.captions]
    loader = torch.utils.data.DataLoader(pairs, config.batch_size, collate_fn=collate)
    scores = {"loss": validation_loss(model, loader, device, autocast)}
    if config.val_metrics:
        captions = caption_frames(model, data.tokenizer, frames, config.batch_size, device,
                                  DecodingOptions(beam_size=config.val_beam_size))
        scores |= evaluate(captions, [it.captions for it in data.val_items], metrics=config.val_metrics)
    return scores


def validation_loss(model: AudioCaptioner, loader, device, autocast) -> float:
    """Mean per-token cross-entropy (no label smoothing) over all validation pairs."""
    total, n_tokens = 0.0, 0
    with torch.no_grad():
        for frames, frame_lengths, tokens_in, tokens_out in loader:
            tokens_out = tokens_out.to(device)
            with autocast:
                out = model(frames.to(device), frame_lengths.to(device), tokens_in.to(device))
            total += caption_loss(out, tokens_out, rlssr_weight=0, n_tokens=1).total.item()
            n_tokens += int((tokens_out != Tokenizer.pad).sum())
    return total / n_tokens


def caption_frames(model: AudioCaptioner, tokenizer: Tokenizer, all_frames: list[np.ndarray], batch_size: int,
                   device, options: DecodingOptions) -> list[str]:
    """One caption per clip from its encoder frames (T_i, D)."""
    captions = []
    with torch.no_grad():
        for i in range(0, len(all_frames), batch_size):
            frames, frame_lengths, _, _ = collate([(f, []) for f in all_frames[i:i + batch_size]])
            memory, memory_mask = model.encode(frames.to(device), frame_lengths.to(device))
            captions += [r.text for r in decode(model, memory, memory_mask, tokenizer, options)]
    return captions


# ---------------------------------------------------------------------------------------------
# the run's state: checkpoints to resume from, and the model file at the end


@dataclass
class Run:
    epoch: int = 0  # epochs done
    step: int = 0  # optimizer steps done
    best_score: float | None = None
    best_epoch: int = 0

    def record(self, epoch: int, score: float, higher_is_better: bool) -> bool:
        """Note `score` of `epoch`; True if it is the best so far."""
        improved = self.best_score is None or (score > self.best_score if higher_is_better else score < self.best_score)
        if improved:
            self.best_score, self.best_epoch = score, epoch
        return improved


def save_state(path: Path, config: TrainConfig, data: TrainingData, model, optimizer, scheduler, run: Run,
               ddp: Distributed) -> None:
    """Everything a resumed run needs to continue exactly as this one will (every rank's random state: taken
    after validation, whose DataLoader draws from it)."""
    rng = ddp.gather(rng_state())
    if ddp.is_main:
        save_checkpoint(path, {
            "model": model.state_dict(), "encoder": data.source.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng, "epoch": run.epoch, "step": run.step,
            "best_score": run.best_score, "best_epoch": run.best_epoch, "config": dataclasses.asdict(config),
            "tokenizer": data.tokenizer.to_dict(),
        })
    ddp.barrier()


def restore_state(path: Path, config: TrainConfig, data: TrainingData, model, optimizer, scheduler,
                  ddp: Distributed) -> Run:
    """The state `save_state` wrote, back into the model, encoder, optimizer, schedule and random generators."""
    ckpt = load_checkpoint(path)
    check_same_config(ckpt["config"], config)
    if ckpt["tokenizer"] != data.tokenizer.to_dict():  # rebuilt from the captions, which the pairs already use
        raise ConfigError(f"{config.train_csv}: the training captions changed since the checkpoint (another "
                          "vocabulary); resume with the original CSV, or start a new run in another out_dir")
    model.load_state_dict(ckpt["model"])
    data.source.load_state_dict(ckpt["encoder"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"][ddp.rank])
    # best_epoch is absent from checkpoints written before early stopping
    return Run(ckpt["epoch"], ckpt["step"], ckpt["best_score"], ckpt.get("best_epoch", ckpt["epoch"]))


def export_model(out_dir: Path, config: TrainConfig, data: TrainingData, model, run: Run, ddp: Distributed) -> Path:
    """The artifact: the best epoch's weights + tokenizer + encoder in one model file."""
    model_path = out_dir / "model.safetensors"
    if ddp.is_main:
        best = load_checkpoint(out_dir / "best.pt")
        model.load_state_dict(best["model"])
        data.source.load_state_dict(best["encoder"])
        training_info = {"config": dataclasses.asdict(config), "epoch": best["epoch"],
                         config.best_metric: run.best_score}
        model_file.save_model(model_path, model.eval(), data.tokenizer, data.source.encoder.eval(),
                              half=config.fp16_model_file, training_info=training_info)
        tqdm.write(f"saved {model_path} (best {config.best_metric}={run.best_score:.4f})")
    ddp.barrier()
    return model_path
