"""The training loop every stage shares: Accelerate, duration buckets, checkpoints that resume exactly.

A stage script supplies a model, a training dataset, a collator and a `compute_loss(model, batch)`; this module does
the rest: mixed precision, gradient accumulation and clipping, warmup + schedule, a tqdm bar, TensorBoard logging
(loss, learning rate, grad norm, audio-seconds per second), periodic evaluation, `save_state` checkpoints written
atomically, `--resume` that continues mid-epoch from the latest readable checkpoint (falling back to the one before a
corrupt one), non-finite losses skipped and counted, and the final `save_pretrained`.
"""

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_scheduler

from avalign.modeling import load_encoder

from .data.batching import AudioAugmentation, DurationBucketSampler
from .precision import CHOICES as PRECISIONS
from .precision import choose_precision

logger = logging.getLogger("avalign")
CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.json"


@dataclass
class StageArguments:
    """Hyperparameters every stage shares (each stage script adds its own dataclass of model/data arguments)."""

    output_dir: str = field(metadata={"help": "where the final model, checkpoints/ and logs/ go"})
    learning_rate: float = 1e-3
    weight_decay: float = 1e-3
    warmup_steps: int = 100
    lr_scheduler_type: str = "cosine"
    max_steps: int = 1000
    num_epochs: int = 1000  # max_steps usually ends training first
    max_seconds_per_batch: float = 120.0
    num_buckets: int = 10
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    freeze_encoder_steps: int = field(default=0, metadata={
        "help": "train only the head for the first N steps, with the encoder frozen (a head warm-up for stages 2-3)"})
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto (bf16 where the device runs it natively, fp16 on a CUDA GPU without bf16, else fp32), no, "
                "fp16 or bf16 (avalign.training.precision)"})
    seed: int = 0
    logging_steps: int = 10
    eval_steps: int = 0  # 0: evaluate only at the end
    save_steps: int = 200
    save_total_limit: int = 2
    resume: bool = field(default=False, metadata={"help": "continue from the latest checkpoint in output_dir"})
    max_consecutive_nonfinite: int = 20
    dataloader_num_workers: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.freeze_encoder_steps < 0:
            raise ValueError(f"--freeze_encoder_steps must be >= 0, got {self.freeze_encoder_steps}")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"--mixed_precision must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}")


@dataclass
class AugmentationArguments:
    """Augmentation for stages 2 and 3, all off by default.

    SpecAugment (NeMo's parameterisation; NeMo's FastConformer recipes use 2 frequency masks of up to 27 bins and 10
    time masks of up to 5 % of the utterance) goes into the encoder config, and the encoder applies it in training
    mode only (`avalign.modeling.spec_augment`). The waveform augmentation (speed, reverberation, noise) is the
    collator's (`avalign.training.data.batching.AudioAugmentation`).
    """

    spec_augment_freq_masks: int = 0
    spec_augment_freq_width: int = 27
    spec_augment_time_masks: int = 0
    spec_augment_time_width: float = 0.05
    speed_perturbation: float = field(default=0.0, metadata={"help": "speed factor drawn in [1 - x, 1 + x]"})
    reverb_probability: float = 0.0
    noise_probability: float = field(default=0.0, metadata={"help": "white noise at 5-30 dB SNR"})

    def __post_init__(self):  # a clear error before training, not a failure mid-epoch (SpecAugment's
        # settings are checked by the encoder config)
        if not 0.0 <= self.speed_perturbation < 1.0:
            raise ValueError(f"--speed_perturbation must be in [0, 1), got {self.speed_perturbation}")
        for name in ("reverb_probability", "noise_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name} must be in [0, 1], got {getattr(self, name)}")

    def encoder_config(self, encoder_config) -> dict:
        """`encoder_config` (a FastConformerConfig) as a dict with these SpecAugment settings."""
        spec_augment = {key: value for key, value in asdict(self).items() if key.startswith("spec_augment_")}
        return {**encoder_config.to_dict(), **spec_augment}

    def audio_augmentation(self, seed: int) -> AudioAugmentation:
        return AudioAugmentation(speed_perturbation=self.speed_perturbation, reverb_probability=self.reverb_probability,
                                 noise_probability=self.noise_probability, seed=seed)  # fmt: skip


def initial_encoder(path: str):
    """The encoder to start a stage from (a previous stage, a Parakeet folder or Hub id, a .nemo file)."""
    encoder, report = load_encoder(path)
    logger.info("initial encoder: %s", report)
    return encoder


def parse_arguments(dataclass_types: tuple, argv: list[str] | None = None):
    """`--config file.yaml` gives the defaults, any other flag overrides them: `--config c.yaml --max_steps 10`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        position = argv.index("--config")
        config_file = Path(argv[position + 1])
        del argv[position : position + 2]
        values = yaml.safe_load(config_file.read_text()) or {}
        argv = [item for key, value in values.items() for item in _as_flags(key, value)] + argv
    return HfArgumentParser(dataclass_types).parse_args_into_dataclasses(args=argv)


def _as_flags(key: str, value) -> list[str]:
    if isinstance(value, list):
        return [f"--{key}", *map(str, value)]
    return [f"--{key}", str(value)]


@dataclass
class TrainingResult:
    global_step: int
    epochs: float
    train_seconds: float
    audio_seconds: float
    skipped_nonfinite: int
    skipped_rows: dict
    last_loss: float
    eval_metrics: dict
    num_processes: int
    eval_history: list = field(default_factory=list)  # the dev learning curve: [{"step": s, **metrics}]

    def to_dict(self) -> dict:
        return asdict(self)


class NonFiniteLossError(RuntimeError):
    pass


class StageTrainer:
    """Runs one stage. `compute_loss(model, batch) -> (loss, {name: float})`; `evaluate(model) -> {name: float}`."""

    def __init__(
        self,
        args: StageArguments,
        model: torch.nn.Module,
        train_dataset,
        collator: Callable,
        compute_loss: Callable,
        evaluate: Callable | None = None,
        stage_name: str = "stage",
        hyperparameters: dict | None = None,
    ):
        self.args, self.stage_name, self.collator = args, stage_name, collator
        self.compute_loss, self.evaluate = compute_loss, evaluate
        self.output_dir = Path(args.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.precision = choose_precision(args.mixed_precision, "cuda" if torch.cuda.is_available() else "cpu")
        logger.info("%s: mixed precision: %s (%s; CPU %s)", stage_name, self.precision.precision,
                    self.precision.reason, self.precision.cpu_model)  # fmt: skip
        _fresh_accelerator_state()
        self.accelerator = Accelerator(
            cpu=not _has_accelerator_device(),  # so that CPU-only multi-process launches use gloo
            mixed_precision=self.precision.accelerate_name,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            log_with="tensorboard",
            project_dir=str(self.output_dir / "logs"),
        )
        set_seed(args.seed)
        self.durations = list(train_dataset["duration"])
        self.sampler = DurationBucketSampler(
            self.durations, args.max_seconds_per_batch, num_buckets=args.num_buckets, seed=args.seed
        )
        # The loader draws its worker seed from its own generator, not the global one: dropout and masking then
        # consume the same random numbers whether a run is resumed or not.
        loader = DataLoader(
            train_dataset, batch_sampler=self.sampler, collate_fn=collator, num_workers=args.dataloader_num_workers,
            generator=torch.Generator().manual_seed(args.seed),
        )
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
        scheduler = get_scheduler(
            args.lr_scheduler_type, optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=args.max_steps
        )
        self.model, self.optimizer, self.loader, self.scheduler = self.accelerator.prepare(
            model, optimizer, loader, scheduler
        )
        # the head warm-up's encoder weights, switched off in one process (`_skip_encoder_backward`)
        self.warm_up_weights = [p for p in model.encoder.parameters() if p.requires_grad] if (
            args.freeze_encoder_steps and self.accelerator.num_processes == 1) else []  # fmt: skip
        self.state = {"global_step": 0, "epoch": 0, "batches_done": 0, "audio_seconds": 0.0,
                      "skipped_nonfinite": 0, "train_seconds": 0.0, "eval_history": []}  # fmt: skip
        self.hyperparameters = {**asdict(args), **(hyperparameters or {}),
                                **{f"precision_{k}": v for k, v in self.precision.to_dict().items()}}

    # ------------------------------------------------------------------------------------------------ loop
    def train(self) -> TrainingResult:
        args, accelerator = self.args, self.accelerator
        if args.resume:
            self._resume()
        accelerator.init_trackers(self.stage_name, config=_loggable(self.hyperparameters))
        bar = tqdm(total=args.max_steps, initial=self.state["global_step"], desc=self.stage_name,
                   disable=not (args.progress and accelerator.is_main_process), dynamic_ncols=True)  # fmt: skip
        consecutive_nonfinite, last_loss, started = 0, float("nan"), time.perf_counter()
        seconds_at_start = self.state["train_seconds"]
        window = {"audio": 0.0, "time": time.perf_counter()}
        while self.state["global_step"] < args.max_steps and self.state["epoch"] < args.num_epochs:
            for batch in self._epoch_batches():
                self.state["batches_done"] += 1
                if batch is None:  # every row of the batch was dropped (counted by the collator)
                    continue
                # 10 ms frames, or the batch's own count (a text-only batch, as the unified model's text task has,
                # holds no audio; its speech batches of encoder outputs say how much they hold)
                batch_audio = batch.get("audio_seconds", batch["attention_mask"].sum().item() / 100.0
                                        if "input_features" in batch else 0.0)  # fmt: skip
                self._skip_encoder_backward()
                with accelerator.accumulate(self.model):
                    loss, logs = self.compute_loss(self.model, batch)
                    if not self._all_finite(loss):
                        consecutive_nonfinite += 1
                        self.state["skipped_nonfinite"] += 1
                        self.optimizer.zero_grad()
                        if consecutive_nonfinite >= args.max_consecutive_nonfinite:
                            raise NonFiniteLossError(
                                f"{self.stage_name}: {consecutive_nonfinite} consecutive non-finite losses at step "
                                f"{self.state['global_step']}; lower the learning rate or check the data"
                            )
                        continue
                    consecutive_nonfinite = 0
                    accelerator.backward(loss)
                    self._drop_encoder_gradients()
                    grad_norm = None
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad()
                window["audio"] += batch_audio
                self.state["audio_seconds"] += batch_audio
                if not accelerator.sync_gradients:
                    continue
                self.state["global_step"] += 1
                last_loss = loss.item()
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.3f}")
                step = self.state["global_step"]
                if step % args.logging_steps == 0:
                    elapsed = time.perf_counter() - window["time"]
                    self._log({"train/loss": last_loss, "train/learning_rate": self.scheduler.get_last_lr()[0],
                               "train/grad_norm": float(grad_norm) if grad_norm is not None else 0.0,
                               "train/audio_seconds_per_second": window["audio"] / max(elapsed, 1e-9),
                               **{f"train/{k}": v for k, v in logs.items()}}, step)  # fmt: skip
                    window = {"audio": 0.0, "time": time.perf_counter()}
                if args.eval_steps and step % args.eval_steps == 0 and self.evaluate is not None:
                    self._evaluate()
                if args.save_steps and step % args.save_steps == 0:
                    self.state["train_seconds"] = seconds_at_start + time.perf_counter() - started
                    self.save_checkpoint()
                if step >= args.max_steps:
                    break
            else:
                self.state["epoch"] += 1
                self.state["batches_done"] = 0
        bar.close()
        self.state["train_seconds"] = seconds_at_start + time.perf_counter() - started
        eval_metrics = self._evaluate() if self.evaluate is not None else {}
        return TrainingResult(
            global_step=self.state["global_step"],
            epochs=self.state["epoch"] + self.state["batches_done"] / max(len(self.sampler.epoch_batches()), 1),
            train_seconds=self.state["train_seconds"], audio_seconds=self.state["audio_seconds"],
            skipped_nonfinite=self.state["skipped_nonfinite"], skipped_rows=dict(self.collator.skip_report.counts),
            last_loss=last_loss, eval_metrics=eval_metrics, num_processes=accelerator.num_processes,
            eval_history=self.state["eval_history"],
        )  # fmt: skip

    def _skip_encoder_backward(self) -> None:
        """The head warm-up in one process: during the first `freeze_encoder_steps` steps the encoder's weights
        require no gradient, so autograd never runs the encoder's backward (the model and its updates are the same
        as `_drop_encoder_gradients` alone gives; a third less time a warm-up step)."""
        frozen = self.state["global_step"] < self.args.freeze_encoder_steps
        for parameter in self.warm_up_weights:
            parameter.requires_grad_(not frozen)
        if not frozen:  # the warm-up is over: nothing left to switch on later steps
            self.warm_up_weights = []

    def _drop_encoder_gradients(self) -> None:
        """The head warm-up: during the first `freeze_encoder_steps` steps the encoder's gradients are dropped, so
        the optimizer leaves its weights alone (dropping, rather than switching requires_grad, keeps every process of
        a distributed run reducing the same gradients)."""
        if self.state["global_step"] < self.args.freeze_encoder_steps:
            for parameter in self.accelerator.unwrap_model(self.model).encoder.parameters():
                parameter.grad = None

    def _epoch_batches(self):
        self.sampler.set_epoch(self.state["epoch"])
        if hasattr(self.collator, "set_epoch"):  # its augmentation draws per epoch
            self.collator.set_epoch(self.state["epoch"])
        self.loader.set_epoch(self.state["epoch"])
        if self.state["batches_done"]:
            return self.accelerator.skip_first_batches(self.loader, self.state["batches_done"])
        return self.loader

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """True when the loss is finite on every process (so that all processes skip the same steps)."""
        finite = torch.isfinite(loss.detach()).float().reshape(1)
        return bool(self.accelerator.reduce(finite, reduction="min").item())

    def _evaluate(self) -> dict:
        """Dev metrics at this step (computed once per step): logged and kept in the learning curve."""
        step, history = self.state["global_step"], self.state["eval_history"]
        if history and history[-1]["step"] == step:
            return {k: v for k, v in history[-1].items() if k != "step"}
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics = self.evaluate(model)
        model.train(was_training)
        history.append({"step": step, **metrics})
        self._log({f"eval/{k}": v for k, v in metrics.items()}, step)
        logger.info("%s step %d dev: %s", self.stage_name, step, _rounded(metrics))
        return metrics

    def _log(self, values: dict, step: int) -> None:
        if values:
            self.accelerator.log(values, step=step)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """`save_state` into a temporary folder, then rename: a checkpoint folder is complete or absent."""
        accelerator = self.accelerator
        final = self.checkpoint_dir / f"{CHECKPOINT_PREFIX}{self.state['global_step']:08d}"
        partial = final.with_name(final.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)  # on every process: each writes its own random states here
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial), safe_serialization=True)
        accelerator.wait_for_everyone()  # every process has written its random states into `partial`
        if accelerator.is_main_process:
            (partial / STATE_FILE).write_text(json.dumps(self.state))
            if final.exists():
                shutil.rmtree(final)
            partial.rename(final)
            for old in self.checkpoints()[: -self.args.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    def checkpoints(self) -> list[Path]:
        if not self.checkpoint_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.suffix != ".partial")

    def _resume(self) -> None:
        for checkpoint in reversed(self.checkpoints()):
            try:
                state = json.loads((checkpoint / STATE_FILE).read_text())
                self.accelerator.load_state(str(checkpoint))
            except Exception as error:  # noqa: BLE001 -- any unreadable checkpoint: report it, try the one before
                logger.warning("checkpoint %s is unreadable (%s: %s); trying the one before", checkpoint,
                               type(error).__name__, error)  # fmt: skip
                continue
            self.state.update(state)
            logger.info("resumed from %s at step %d", checkpoint, self.state["global_step"])
            return
        logger.info("no readable checkpoint in %s: starting from scratch", self.checkpoint_dir)

    def save_final(self, *processors, metrics: dict | None = None) -> None:
        """`save_pretrained` of the unwrapped model and its processors (feature extractor, tokenizer) + metrics.json."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            accelerator.unwrap_model(self.model).save_pretrained(self.output_dir)
            for processor in processors:
                processor.save_pretrained(self.output_dir)
            metrics = {**(metrics or {}), "hyperparameters": _loggable(self.hyperparameters)}
            (self.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        accelerator.end_training()  # closes the trackers (and, with several processes, the process group)


def _fresh_accelerator_state() -> None:
    """One process may run several stages (the pipeline, the tests), and accelerate keeps one state per process: in a
    single-process run every stage starts from a fresh one, so that its precision is its own."""
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=True)


def _has_accelerator_device() -> bool:
    return torch.cuda.is_available() or torch.backends.mps.is_available() or (
        hasattr(torch, "xpu") and torch.xpu.is_available()
    )


def _rounded(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def _loggable(values: dict) -> dict:
    """TensorBoard hparams take numbers, strings and booleans only."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}


def arguments_to_dict(*dataclass_objects) -> dict:
    return {f.name: getattr(obj, f.name) for obj in dataclass_objects for f in fields(obj)}
