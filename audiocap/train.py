"""Train a captioning model: `audiocap train CONFIG.yaml [key=value ...] [--resume]`.

The whole recipe of Koh, Xue & Chng (ICASSP 2022), top to bottom:

  1. frames of a frozen pretrained audio encoder (PANNs), computed once through the feature cache
     (or, with `finetune_encoder`, the encoder runs on waveforms inside the forward pass and trains too);
  2. every (clip, caption) pair is a training example; the vocabulary comes from the training captions;
  3. loss = cross-entropy (label-smoothed) + λ · RLSSR, with SpecAugment (and optionally mixup) on frames;
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
from dataclasses import dataclass, field
from pathlib import Path


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
        from audiocap.errors import ConfigError
        from audiocap.metrics import METRICS, score_names
        from audiocap.model import ModelDimensions
        from audiocap.config import TRAIN_CONFIG_RANGES, check_model_options, check_ranges

        for key in ("train_csv", "train_audio_dir", "val_csv", "val_audio_dir"):
            if not getattr(self, key):
                raise ConfigError(f"config key {key!r} is required (a Clotho-format CSV / audio folder)")
        choices = {"rlssr_loss": ("l1", "l2"), "lr_decay": ("cosine", "linear", "none"),
                   "encoder_batchnorm": ("auto", "batch", "sync", "frozen"), "device": ("auto", "cpu", "cuda")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"config key {key}={getattr(self, key)!r}: choose one of {', '.join(allowed)}")
        check_ranges(self, TRAIN_CONFIG_RANGES)
        self.model = check_model_options(self.model, ModelDimensions)  # before any feature is extracted
        for name in self.val_metrics:
            if name not in METRICS:
                raise ConfigError(f"config key val_metrics: unknown metric {name!r}; choose from {', '.join(METRICS)}")
        if self.best_metric != "loss" and self.best_metric not in score_names(self.val_metrics):
            raise ConfigError(f"config key best_metric={self.best_metric!r} is not computed: choose one of "
                              f"{', '.join(score_names(self.val_metrics) + ['loss'])}, or add its metric to "
                              "val_metrics (e.g. bleu for bleu_4)")


def configure_train(parser) -> None:
    parser.add_argument("config", help="YAML file with TrainConfig keys (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. epochs=5")
    parser.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")


def run_train(args) -> int:
    from audiocap.config import load_config

    train(load_config(TrainConfig, args.config, args.overrides), resume=args.resume)
    return 0


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Run the recipe; returns the path of the final model file (OUT_DIR/model.safetensors)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel
    from tqdm import tqdm

    from audiocap import model_file
    from audiocap.config import check_same_config, model_dimensions
    from audiocap.data.cache import FeatureCache
    from audiocap.data.datasets import load_dataset
    from audiocap.data.validate import check_items
    from audiocap.decoding import DecodingOptions, decode
    from audiocap.encoders import create_encoder
    from audiocap.errors import ConfigError
    from audiocap.model import AudioCaptioner, ModelDimensions, rlssr_loss
    from audiocap.tokenizer import Tokenizer
    from audiocap.training_utils import (WaveformPairs, build_encoder, check_clip_frames, encoder_batchnorm_mode,
                                         batch_groups, estimated_frames, freeze_batchnorm_statistics,
                                         gradient_sync, load_checkpoint, lr_factor, mixup, param_groups, rng_state,
                                         save_checkpoint, set_rng_state, setup_distributed, spec_augment,
                                         unfreeze_for_finetuning)

    ddp = setup_distributed(config.device)
    torch.manual_seed(config.seed)  # same initial weights on every rank (DDP also broadcasts them)
    out_dir = Path(config.out_dir)

    # ---- data: tokenizer, (clip, caption) pairs; a clip is its encoder frames (cached), or its waveform
    encoder = build_encoder(config, create_encoder).freeze()
    cache = None if config.finetune_encoder else FeatureCache(config.cache_dir)

    train_items = load_dataset(config.train_csv, config.train_audio_dir)
    val_items = load_dataset(config.val_csv, config.val_audio_dir)
    # a cached clip decoded when it was cached: only the others are decoded (one lookup: it hashes the weights)
    decoded = cache.cached(encoder, [it.audio_path for it in train_items + val_items]) if cache else frozenset()
    train_items, val_items = [check_items(items, config.skip_bad_items, progress=ddp.is_main, decoded=decoded,
                                          skip_hint="skip_bad_items=true")
                              for items in (train_items, val_items)]
    tokenizer = Tokenizer.build([c for it in train_items for c in it.captions], config.min_word_count)
    dims = model_dimensions(config, ModelDimensions, encoder.dim, tokenizer.n_vocab)
    n_ctx = dims.max_caption_tokens - 1  # room for <bos> (decoder input) / <eos> (target)

    def pairs(clips, items):  # every (clip, caption) pair is an example
        return [(clip, tokenizer.encode(c)[:n_ctx]) for clip, it in zip(clips, items) for c in it.captions]

    if config.finetune_encoder:  # the encoder changes every step: nothing to cache; validation re-encodes
        encoder = unfreeze_for_finetuning(encoder.to(ddp.device))
        batchnorm = encoder_batchnorm_mode(config.encoder_batchnorm, ddp)
        if config.encoder_dropout is not None:
            if not hasattr(encoder, "dropout"):
                raise ConfigError(f"encoder_dropout: encoder {config.encoder!r} has no dropout to set; remove the key")
            encoder.dropout = config.encoder_dropout
        if batchnorm == "sync":  # same parameter and buffer names: checkpoints and model files are unchanged
            encoder = torch.nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
        # validation encodes whole clips: one too long for the model would fail only after the first epoch
        paths = [it.audio_path for it in train_items + val_items]
        crops = [config.crop_seconds] * len(train_items) + [None] * len(val_items)
        check_clip_frames(paths, estimated_frames(paths, encoder.frame_rate, crops), dims.max_audio_frames,
                          fix="crop_seconds= (training clips; validation captions whole clips), ")
        train_pairs = WaveformPairs(pairs([it.audio_path for it in train_items], train_items),
                                    encoder.sample_rate, config.crop_seconds)
        val_frames = None
    else:
        paths = [it.audio_path for it in train_items + val_items]
        if ddp.is_main:  # rank 0 fills the cache; the others then read it
            frames = cache.get_many(encoder, paths, progress=True)
        ddp.barrier()
        if not ddp.is_main:
            frames = cache.get_many(encoder, paths, progress=False)
        check_clip_frames(paths, [len(f) for f in frames], dims.max_audio_frames)  # before any training step
        train_pairs, val_frames = pairs(frames[:len(train_items)], train_items), frames[len(train_items):]
    sampler = torch.utils.data.DistributedSampler(  # also used for one process: a fixed order per epoch
        train_pairs, num_replicas=ddp.world_size, rank=ddp.rank, shuffle=True, seed=config.seed)
    train_loader = torch.utils.data.DataLoader(train_pairs, config.batch_size, sampler=sampler, collate_fn=collate)

    # ---- model, optimizer, schedule
    model = AudioCaptioner(dims).to(ddp.device)
    groups = param_groups(model, config.learning_rate, config.weight_decay)
    if config.finetune_encoder:  # its own learning rate: typically smaller, to adapt the pretrained features gently
        encoder_lr = config.learning_rate if config.encoder_learning_rate is None else config.encoder_learning_rate
        groups += param_groups(encoder, encoder_lr, config.weight_decay)
    optimizer = torch.optim.AdamW(groups)
    total_steps = config.epochs * math.ceil(len(train_loader) / config.grad_accum_steps)  # optimizer steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(
        step, config.warmup_steps, total_steps, config.lr_decay, config.min_lr_ratio))
    ddp_model = DistributedDataParallel(model) if ddp.enabled else model
    ddp_encoder = DistributedDataParallel(encoder) if ddp.enabled and config.finetune_encoder else encoder
    autocast = torch.autocast(ddp.device.type, dtype=torch.bfloat16, enabled=config.bf16)

    def encoder_state():  # a frozen encoder is rebuilt from its checkpoint: no copy in every checkpoint
        return encoder.state_dict() if config.finetune_encoder else None

    start_epoch, step, best_score, best_epoch = 0, 0, None, 0
    if resume:
        ckpt = load_checkpoint(out_dir / "last.pt")
        check_same_config(ckpt["config"], config)
        if ckpt["tokenizer"] != tokenizer.to_dict():  # rebuilt from the captions, which the pairs already use
            raise ConfigError(f"{config.train_csv}: the training captions changed since the checkpoint (another "
                              "vocabulary); resume with the original CSV, or start a new run in another out_dir")
        model.load_state_dict(ckpt["model"])
        if config.finetune_encoder:
            encoder.load_state_dict(ckpt["encoder"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, step, best_score = ckpt["epoch"], ckpt["step"], ckpt["best_score"]
        best_epoch = ckpt.get("best_epoch", start_epoch)  # absent from checkpoints written before early stopping
        set_rng_state(ckpt["rng"][ddp.rank])
    higher_is_better = config.best_metric != "loss"
    writer = None
    if ddp.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(out_dir / "tensorboard")

    for epoch in range(start_epoch, config.epochs):
        if config.early_stopping_patience and epoch - best_epoch >= config.early_stopping_patience:
            if ddp.is_main:
                tqdm.write(f"early stopping: no better {config.best_metric} in the {config.early_stopping_patience} "
                           f"epochs since epoch {best_epoch}")
            break
        # ---- one epoch of training
        ddp_model.train()
        encoder.train()  # a no-op for a frozen encoder: AudioEncoder keeps it in eval mode
        if config.finetune_encoder and batchnorm == "frozen":
            freeze_batchnorm_statistics(encoder)
        sampler.set_epoch(epoch)
        progress = tqdm(train_loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not ddp.is_main)
        for group in batch_groups(progress, config.grad_accum_steps):  # the batches of one optimizer step
            # Sum over tokens / tokens in the *global* batch (all the group's batches on all processes, × world
            # size, as DDP averages gradients): N processes × k accumulated batches take exactly the step of one
            # process with the combined batch. RLSSR, a mean over clips, is weighted by each batch's share of them.
            n_tokens = ddp.all_reduce_sum(torch.tensor(sum(int((b[3] != Tokenizer.pad).sum()) for b in group),
                                                       device=ddp.device))
            n_clips = sum(len(b[3]) for b in group)
            optimizer.zero_grad(set_to_none=True)
            loss_sum = rl_sum = 0.0
            for i, (frames, frame_lengths, tokens_in, tokens_out) in enumerate(group):
                # frames (B,T,D) · frame_lengths (B,) · tokens_in = <bos> w1..wn, tokens_out = w1..wn <eos>, (B,L)
                # (when fine-tuning, the batch holds waveforms (B,N) and their lengths in samples instead)
                frames, frame_lengths = frames.to(ddp.device), frame_lengths.to(ddp.device)
                tokens_in, tokens_out = tokens_in.to(ddp.device), tokens_out.to(ddp.device)
                with gradient_sync(i == len(group) - 1, ddp_model, ddp_encoder):  # all-reduce on the last only
                    if config.finetune_encoder:
                        with autocast:
                            frames, frame_lengths = ddp_encoder(frames, frame_lengths)
                    frames = spec_augment(frames, frame_lengths, config.time_masks, config.time_mask_width,
                                          config.feature_masks, config.feature_mask_width)
                    if config.mixup_alpha > 0:
                        frames, frame_lengths = mixup(frames, frame_lengths, config.mixup_alpha)
                    with autocast:
                        out = ddp_model(frames, frame_lengths, tokens_in)
                    loss = F.cross_entropy(out["logits"].float().flatten(0, 1), tokens_out.flatten(),
                                           ignore_index=Tokenizer.pad, label_smoothing=config.label_smoothing,
                                           reduction="sum") * ddp.world_size / n_tokens
                    if config.rlssr_weight > 0:
                        share = len(tokens_out) / n_clips  # a Python float: exactly 1.0 without accumulation
                        rl = rlssr_loss(out["rlssr_reconstruction"], out["memory"], out["memory_mask"],
                                        distance=config.rlssr_loss, stop_gradient=config.rlssr_stop_gradient) * share
                        loss = loss + config.rlssr_weight * rl
                        rl_sum += rl.detach()
                    loss.backward()
                loss_sum += loss.detach()
            # one norm over captioner and encoder (a frozen encoder has no gradients to count)
            grad_norm = torch.nn.utils.clip_grad_norm_([*model.parameters(), *encoder.parameters()], config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            loss_mean = ddp.all_reduce_sum(loss_sum).item() / ddp.world_size  # of the global batch
            if writer:
                progress.set_postfix(loss=f"{loss_mean:.3f}")
                writer.add_scalar("train/loss", loss_mean, step)
                if config.rlssr_weight > 0:
                    writer.add_scalar("train/rlssr", float(rl_sum), step)
                writer.add_scalar("train/grad_norm", grad_norm.item(), step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)

        # ---- validation (rank 0; the other ranks hold identical weights)
        if ddp.is_main:
            model.eval()
            encoder.eval()
            if config.finetune_encoder:  # this epoch's encoder, whole clips: as the model file will caption
                val_frames = [encoder.encode_file(it.audio_path) for it in val_items]
            val_loader = torch.utils.data.DataLoader(pairs(val_frames, val_items), config.batch_size,
                                                     collate_fn=collate)
            scores = {"loss": validation_loss(model, val_loader, ddp.device, autocast)}
            if config.val_metrics:
                from audiocap.metrics import evaluate

                captions = caption_frames(model, tokenizer, val_frames, config.batch_size, ddp.device,
                                          DecodingOptions(beam_size=config.val_beam_size), decode)
                scores |= evaluate(captions, [it.captions for it in val_items], metrics=config.val_metrics)
            for name, value in scores.items():
                if isinstance(value, (int, float)):
                    writer.add_scalar(f"val/{name}", value, step)
            score = scores[config.best_metric]
            improved = best_score is None or (score > best_score if higher_is_better else score < best_score)
            if improved:
                best_score, best_epoch = score, epoch + 1
                save_checkpoint(out_dir / "best.pt", {"model": model.state_dict(), "encoder": encoder_state(),
                                                      "epoch": epoch + 1})
            summary = " ".join(f"{k}={v:.4f}" for k, v in scores.items() if isinstance(v, float))
            tqdm.write(f"epoch {epoch + 1}: {summary}{' (best)' if improved else ''}")

        best_epoch = int(ddp.all_reduce_sum(torch.tensor(best_epoch if ddp.is_main else 0, device=ddp.device)))

        # ---- checkpoint: everything a resumed run needs to continue exactly as this one will
        rng = ddp.gather(rng_state())  # every rank's; taken after validation, whose DataLoader draws from it
        if ddp.is_main:
            save_checkpoint(out_dir / "last.pt", {
                "model": model.state_dict(), "encoder": encoder_state(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng, "epoch": epoch + 1, "step": step,
                "best_score": best_score, "best_epoch": best_epoch, "config": dataclasses.asdict(config),
                "tokenizer": tokenizer.to_dict(),
            })
        ddp.barrier()

    # ---- the artifact: best weights + tokenizer + encoder in one file
    model_path = out_dir / "model.safetensors"
    if ddp.is_main:
        writer.close()
        best = load_checkpoint(out_dir / "best.pt")
        model.load_state_dict(best["model"])
        if config.finetune_encoder:
            encoder.load_state_dict(best["encoder"])
        training_info = {"config": dataclasses.asdict(config), "epoch": best["epoch"], config.best_metric: best_score}
        model_file.save_model(model_path, model.eval(), tokenizer, encoder.eval(), half=config.fp16_model_file,
                              training_info=training_info)
        tqdm.write(f"saved {model_path} (best {config.best_metric}={best_score:.4f})")
    ddp.barrier()
    return model_path


def collate(batch):
    """[(frames (T_i,D) array, ids list)] -> frames (B,T,D), frame_lengths (B,), tokens_in/out (B,L)."""
    import torch

    from audiocap.tokenizer import Tokenizer

    frames = [torch.tensor(f, dtype=torch.float32) for f, _ in batch]  # copies the memory-mapped cache
    frame_lengths = torch.tensor([f.shape[0] for f in frames])
    padded = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True)
    L = max(len(ids) for _, ids in batch) + 1
    tokens_in = torch.full((len(batch), L), Tokenizer.pad)
    tokens_out = torch.full((len(batch), L), Tokenizer.pad)
    for i, (_, ids) in enumerate(batch):
        tokens_in[i, : len(ids) + 1] = torch.tensor([Tokenizer.bos, *ids])
        tokens_out[i, : len(ids) + 1] = torch.tensor([*ids, Tokenizer.eos])
    return padded, frame_lengths, tokens_in, tokens_out


def validation_loss(model, loader, device, autocast) -> float:
    """Mean per-token cross-entropy (no label smoothing) over all validation pairs."""
    import torch
    import torch.nn.functional as F

    from audiocap.tokenizer import Tokenizer

    total, n_tokens = 0.0, 0
    with torch.no_grad():
        for frames, frame_lengths, tokens_in, tokens_out in loader:
            tokens_out = tokens_out.to(device)
            with autocast:
                logits = model(frames.to(device), frame_lengths.to(device), tokens_in.to(device))["logits"]
            total += F.cross_entropy(logits.float().flatten(0, 1), tokens_out.flatten(),
                                     ignore_index=Tokenizer.pad, reduction="sum").item()
            n_tokens += int((tokens_out != Tokenizer.pad).sum())
    return total / n_tokens


def caption_frames(model, tokenizer, all_frames, batch_size, device, options, decode) -> list[str]:
    """One caption per clip from cached encoder frames (validation)."""
    import torch

    captions = []
    with torch.no_grad():
        for i in range(0, len(all_frames), batch_size):
            frames, frame_lengths, _, _ = collate([(f, []) for f in all_frames[i:i + batch_size]])
            memory, memory_mask = model.encode(frames.to(device), frame_lengths.to(device))
            captions += [r.text for r in decode(model, memory, memory_mask, tokenizer, options)]
    return captions
