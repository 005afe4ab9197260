"""The demo reference model: a small Llama with the teacher's tokenizer, built by us on D_ref.

As in MiniPLM, the reference is much smaller than the teacher and fitted to a random slice of the
corpus (D_ref) that is then never scored. Two recipes (`ReferenceSpec.init`):

- `scratch`: a small Llama from random weights, trained on D_ref. On a CPU budget of minutes it only
  reaches unigram-level loss, so it does not find the same text easy as the teacher does (measured
  Spearman 0.07 on the demo corpus): the difference score then degenerates into teacher perplexity.
- `teacher-cut`: the teacher's embeddings, first `layers` decoder layers (and optionally its last
  `top_layers`), final norm and head; the top `adapt_layers` of them (and the final norm) adapted on
  D_ref with the rest frozen. The idea: it shares what the teacher learnt about tokens and local
  context, so both would agree on what is easy. Measured (bench/reference.py): without training its
  logits are far worse than uniform and the score becomes its ranking negated; adapting it costs
  more than the demo's budget on 2 loaded CPU cores. Kept as an option, not the default.
- `teacher-lens` (the default): the teacher's embeddings, first `layers` decoder layers and final
  norm, read out through a linear map fitted by regression on the teacher's own final state over
  D_ref and folded into an untied head (embedded/lens.py). Closed form: one teacher forward pass
  over the fit blocks and a d x d solve. Measured on the demo corpus, it is the only recipe that
  agrees with the teacher on what is easy within a first demo's budget, at 20 of the teacher's 30
  layers; it costs ~2/3 of a teacher forward pass per scored token.

Building is seeded: the same data, spec, seed, thread count and hardware give the same weights. It
takes minutes on 2 CPU cores, which is why it is built at set-up rather than committed.

Float32 by default: on CPUs without native bf16 (no AMX / avx512-bf16), bf16 matmuls are emulated
and hundreds of times slower. bf16 autocast is used only where the hardware runs it natively.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from embedded import paths
from embedded.lens import build_lens
from embedded.noise import noisy_copies
from scoring.errors import ConfigError
from scoring.fingerprint import SOURCE_FILE
from scoring.models import cpu_has_native_bf16

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Bump when the training procedure changes in a way that changes the weights.
TRAINER_VERSION = "1"
# Losses, token counts, seconds, threads: for people, not for the fingerprint.
TRAINING_FILE = "training.json"


Init = Literal["scratch", "teacher-cut", "teacher-lens"]
INITS = ("scratch", "teacher-cut", "teacher-lens")


@dataclass(frozen=True)
class ReferenceSpec:
    """Recipe, architecture and training budget. `seq_len` is also the model's context: positions
    beyond it were never trained, so the engine must not score longer windows with it.

    `width`, `heads` and `intermediate` shape a `scratch` model; a `teacher-cut` one has the
    teacher's shape and only chooses `layers` (kept from the bottom), `top_layers` (the teacher's
    last layers, kept above them: their output is in the space the final norm and head read, where
    a bottom slice alone gives logits worse than uniform) and `adapt_layers` (trained, from the top
    of the kept stack; embeddings and head stay frozen). `train_tokens=0` means no training:
    only a teacher cut can be used as it is.

    A `teacher-lens` keeps `layers` and fits its map on `train_tokens` tokens of D_ref blocks, of
    which a `noise_share` are noisy copies of D_ref documents (embedded/noise.py; see embedded/lens.py
    for why), with ridge strength `ridge`; `lr`, `batch_rows` and the schedule do not apply to it.
    """

    init: Init = "scratch"
    layers: int = 4
    adapt_layers: int = 1
    top_layers: int = 0
    width: int = 128
    heads: int = 4
    intermediate: int = 512
    seq_len: int = 512
    batch_rows: int = 8
    train_tokens: int = 400_000
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05
    val_fraction: float = 0.02
    noise_share: float = 0.0
    ridge: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"init={self.init!r} is not one of {', '.join(map(repr, INITS))}")
        if self.layers < 1:
            raise ConfigError(f"layers={self.layers} must be at least 1")
        if self.width % self.heads:
            raise ConfigError(f"width={self.width} is not divisible by heads={self.heads}")
        if self.init == "teacher-cut" and not 0 <= self.adapt_layers <= self.layers + self.top_layers:
            raise ConfigError(
                f"adapt_layers={self.adapt_layers} must lie in [0, layers + top_layers={self.layers + self.top_layers}]"
            )
        if self.top_layers < 0 or (self.init == "scratch" and self.top_layers):
            raise ConfigError(f"top_layers={self.top_layers}: only a teacher cut keeps top layers (>= 0)")
        if self.init == "teacher-lens" and self.top_layers:
            raise ConfigError(f"top_layers={self.top_layers}: a teacher lens keeps only the bottom layers")
        if self.init != "teacher-cut" and self.train_tokens == 0:
            raise ConfigError(f"train_tokens=0 leaves a {self.init} reference untrained: only init='teacher-cut' may skip training")
        if not 0.0 <= self.noise_share < 1.0:
            raise ConfigError(f"noise_share={self.noise_share} must lie in [0, 1)")
        if self.noise_share and self.init != "teacher-lens":
            raise ConfigError(f"noise_share={self.noise_share}: only a teacher-lens reference mixes noise into its fit")
        if not self.ridge > 0:
            raise ConfigError(f"ridge={self.ridge} must be positive")
        if self.init == "teacher-lens" and self.fit_blocks < 1:
            raise ConfigError(f"train_tokens={self.train_tokens} is less than one block of seq_len={self.seq_len} to fit the lens on")
        if self.init != "teacher-lens" and self.train_tokens and self.train_tokens < self.seq_len * self.batch_rows:
            raise ConfigError(
                f"train_tokens={self.train_tokens} is less than one batch (batch_rows={self.batch_rows} x seq_len={self.seq_len})"
            )

    @property
    def tokens_per_step(self) -> int:
        return self.batch_rows * self.seq_len

    @property
    def steps(self) -> int:
        return self.train_tokens // self.tokens_per_step

    @property
    def fit_blocks(self) -> int:
        """Blocks of `seq_len` tokens a teacher lens's map is solved on (a lens takes no steps)."""
        return self.train_tokens // self.seq_len


# The embedded default, chosen by measurement (bench/reference.py; README "Measured"): a scratch
# model trainable in the demo's budget stays near unigram statistics and ranks the demo's documents
# unlike the teacher (Spearman 0.07); a lens on the teacher's first 20 of 30 layers, fitted on 48
# blocks of D_ref with a third of them noisy, agrees with it (see the README) and still drops noise.
DEMO_REFERENCE = ReferenceSpec(init="teacher-lens", layers=20, train_tokens=48 * 512, noise_share=1 / 3)


def native_bf16(device: torch.device) -> bool:
    """bf16 autocast only pays off where the hardware has it: CUDA (Ampere+) or CPUs with AMX/AVX512-BF16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def build_model(spec: ReferenceSpec, tokenizer_config: dict[str, int | None]) -> PreTrainedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=int(tokenizer_config["vocab_size"] or 0),
        hidden_size=spec.width,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.seq_len,
        tie_word_embeddings=True,  # the 49k x width embedding is most of the model: share it with the head
        bos_token_id=tokenizer_config["bos_token_id"],
        eos_token_id=tokenizer_config["eos_token_id"],
        pad_token_id=tokenizer_config["pad_token_id"],
    )
    return LlamaForCausalLM(config)


def token_stream(docs: Iterable[str], tokenizer: PreTrainedTokenizerBase, context_id: int) -> list[int]:
    """Documents joined as `ctx doc ctx doc ...`: each document is preceded by the same token the
    scoring engine conditions on, so the reference learns what a document start looks like."""
    stream: list[int] = []
    for ids in tokenizer(list(docs), add_special_tokens=False)["input_ids"]:
        stream.append(context_id)
        stream.extend(ids)
    return stream


def lens_blocks(
    train_blocks: torch.Tensor,
    docs: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    spec: ReferenceSpec,
    context_id: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """The `spec.fit_blocks` blocks a lens is fitted on: a seeded draw of D_ref's training blocks, of
    which `spec.noise_share` are replaced by blocks of noisy copies of D_ref documents."""
    wanted = min(spec.fit_blocks, len(train_blocks))
    n_noise = round(wanted * spec.noise_share)
    clean = train_blocks[torch.randperm(len(train_blocks), generator=generator)[: wanted - n_noise]]
    if not n_noise:
        return clean
    # Copies enough for twice the blocks needed if each ran 400 tokens (they run ~500, so ~2.5x):
    # the draw keeps a choice, and too few still fails by name below.
    rng = random.Random(spec.seed)
    stream = torch.tensor(
        token_stream(noisy_copies(docs, 2 * n_noise * spec.seq_len // 400 + 1, rng), tokenizer, context_id)
    )
    available = len(stream) // spec.seq_len
    if available < n_noise:
        raise ConfigError(f"noisy copies of D_ref gave {available} blocks of {spec.seq_len} tokens; the fit needs {n_noise}")
    noisy = stream[: available * spec.seq_len].view(available, spec.seq_len)
    return torch.cat([clean, noisy[torch.randperm(available, generator=generator)[:n_noise]]])


def _lr_at(step: int, spec: ReferenceSpec) -> float:
    warmup = max(1, int(spec.steps * spec.warmup_fraction))
    if step < warmup:
        return spec.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, spec.steps - warmup)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))  # cosine down to 10%


def cut_teacher(teacher_dir: Path, spec: ReferenceSpec) -> PreTrainedModel:
    """The teacher's embeddings, first `spec.layers` and last `spec.top_layers` decoder layers, final
    norm and head, in float32, with everything frozen except the top `spec.adapt_layers` of the kept
    layers and (when there is training) the final norm."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    trunk = model.base_model
    layers = trunk.layers
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(f"{teacher_dir}: the teacher has no list of decoder layers to cut ({type(layers).__name__})")
    total = len(layers)
    kept = spec.layers + spec.top_layers
    if kept >= total:
        raise ConfigError(
            f"layers={spec.layers} + top_layers={spec.top_layers} cuts nothing from a teacher of {total} layers"
        )
    index = [*range(spec.layers), *range(total - spec.top_layers, total)]
    trunk.layers = torch.nn.ModuleList(layers[i] for i in index)
    for position, layer in enumerate(trunk.layers):
        if hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = position  # the KV-cache slot, should anyone generate with it
    model.config.num_hidden_layers = kept
    if getattr(model.config, "layer_types", None) is not None:
        model.config.layer_types = [model.config.layer_types[i] for i in index]
    model.config.max_position_embeddings = spec.seq_len
    model.requires_grad_(False)
    for layer in trunk.layers[kept - spec.adapt_layers :]:
        layer.requires_grad_(True)
    if spec.train_tokens:  # the final norm sets the scale of the logits: adapted whenever anything is
        trunk.norm.requires_grad_(True)
    return model


def initial_model(spec: ReferenceSpec, tokenizer: PreTrainedTokenizerBase, teacher_dir: Path | None) -> PreTrainedModel:
    if spec.init == "teacher-cut":
        if teacher_dir is None:
            raise ConfigError("init='teacher-cut' needs the teacher's directory")
        return cut_teacher(teacher_dir, spec)
    return build_model(
        spec,
        {
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
    )


def train(
    docs: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    spec: ReferenceSpec,
    device: torch.device | None = None,
    teacher_dir: Path | None = None,
) -> tuple[PreTrainedModel, dict[str, float]]:
    """Build a reference on `docs`; returns the model and its figures (losses, tokens, seconds)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(spec.seed)
    context = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    stream = torch.tensor(token_stream(docs, tokenizer, int(context)), dtype=torch.long)
    n_blocks = len(stream) // spec.seq_len
    if n_blocks < 2:
        raise ConfigError(f"D_ref has {len(stream)} tokens: too few for seq_len={spec.seq_len}")
    blocks = stream[: n_blocks * spec.seq_len].view(n_blocks, spec.seq_len)
    generator = torch.Generator().manual_seed(spec.seed)
    order = torch.randperm(n_blocks, generator=generator)
    n_val = max(1, int(n_blocks * spec.val_fraction))
    val, train_blocks = blocks[order[:n_val]], blocks[order[n_val:]]

    started = time.monotonic()
    if spec.init == "teacher-lens":
        if teacher_dir is None:
            raise ConfigError("init='teacher-lens' needs the teacher's directory")
        fit = lens_blocks(train_blocks, docs, tokenizer, spec, int(context), generator)
        model, loss_value, used = build_lens(teacher_dir, fit, spec, device), None, fit.numel()
    else:
        model, loss_value = _train_weights(spec, tokenizer, teacher_dir, train_blocks, device, generator, started)
        used = spec.steps * spec.tokens_per_step
    seconds = time.monotonic() - started
    model.eval()
    with torch.inference_mode():
        val_losses = [
            float(model(input_ids=val[i : i + 8].to(device), labels=val[i : i + 8].to(device)).loss)
            for i in range(0, len(val), 8)
        ]
    model.requires_grad_(True)  # saved weights carry no training state
    figures = {
        **({} if loss_value is None else {"train_loss": loss_value}),  # a lens is solved, not trained
        "val_loss": sum(val_losses) / len(val_losses),
        "train_tokens": used,  # what the fit saw: a lens's D_ref can hold fewer blocks than asked
        "d_ref_tokens": len(stream),
        "seconds": round(seconds, 1),
    }
    log.info("reference built in %.0f s: validation loss %.3f", seconds, figures["val_loss"])
    return model, figures


def _train_weights(
    spec: ReferenceSpec,
    tokenizer: PreTrainedTokenizerBase,
    teacher_dir: Path | None,
    train_blocks: torch.Tensor,
    device: torch.device,
    generator: torch.Generator,
    started: float,
) -> tuple[PreTrainedModel, float]:
    """A scratch model or teacher cut, its trainable weights fitted to `train_blocks`."""
    model = initial_model(spec, tokenizer, teacher_dir)
    torch.nn.Module.to(model, device)  # in place; PreTrainedModel.to's decorated signature confuses mypy
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    use_bf16 = native_bf16(device)
    log.info(
        "building reference (%s): %d layers x %d wide, %d of %d parameters trained, %d steps of %d tokens "
        "(%d train blocks, %.1f epochs), %s",
        spec.init,
        model.config.num_hidden_layers,
        model.config.hidden_size,
        sum(p.numel() for _, p in trainable),
        sum(p.numel() for p in model.parameters()),
        spec.steps,
        spec.tokens_per_step,
        len(train_blocks),
        spec.steps * spec.batch_rows / len(train_blocks),
        "bf16 autocast" if use_bf16 else "float32",
    )
    loss_value = float("nan")
    if spec.steps:
        model.train()
        loss_value = _fit(model, trainable, train_blocks, spec, device, generator, use_bf16, started)
    return model, loss_value


def _fit(
    model: PreTrainedModel,
    trainable: list[tuple[str, torch.nn.Parameter]],
    train_blocks: torch.Tensor,
    spec: ReferenceSpec,
    device: torch.device,
    generator: torch.Generator,
    use_bf16: bool,
    started: float,
) -> float:
    """AdamW with warm-up and cosine decay over `spec.steps` batches; returns the last loss."""
    decay = [p for _, p in trainable if p.dim() >= 2]
    no_decay = [p for _, p in trainable if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr,
        betas=(0.9, 0.95),
    )
    params = [p for _, p in trainable]
    loss_value = float("nan")
    cursor, epoch_order = 0, torch.randperm(len(train_blocks), generator=generator)
    for step in range(spec.steps):
        if cursor + spec.batch_rows > len(epoch_order):
            cursor, epoch_order = 0, torch.randperm(len(train_blocks), generator=generator)
        batch = train_blocks[epoch_order[cursor : cursor + spec.batch_rows]].to(device)
        cursor += spec.batch_rows
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, spec)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        loss_value = float(loss.detach())
        if step % max(1, spec.steps // 10) == 0 or step == spec.steps - 1:
            elapsed = time.monotonic() - started
            log.info(
                "step %d/%d loss %.3f (%.0f tokens/s)",
                step + 1,
                spec.steps,
                loss_value,
                (step + 1) * spec.tokens_per_step / max(elapsed, 1e-9),
            )
    return loss_value


def files_sha256(files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _expected_source(spec: ReferenceSpec, ref_files: Sequence[Path], teacher_dir: Path) -> dict[str, object]:
    record: dict[str, object] = {
        "kind": "trained" if spec.init == "scratch" else spec.init,
        "trainer_version": TRAINER_VERSION,
        "spec": asdict(spec),
        "d_ref_files": [p.name for p in ref_files],
        "d_ref_sha256": files_sha256(ref_files),
        "tokenizer_from": teacher_dir.name,
    }
    if spec.init != "scratch":  # the weights come from the teacher: another teacher, another reference
        record["teacher_weights_sha256"] = files_sha256(sorted(teacher_dir.glob("*.safetensors")))
    return record


def _matches(directory: Path, expected: dict[str, object]) -> bool:
    source = directory / SOURCE_FILE
    if not (source.is_file() and (directory / "config.json").is_file()):
        return False
    try:
        recorded = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return all(recorded.get(k) == v for k, v in expected.items())


def read_docs(files: Sequence[Path]) -> list[str]:
    from embedded.corpus import read_jsonl_zst

    return [row["text"] for path in files for row in read_jsonl_zst(path)]


def ensure_reference(
    teacher_dir: Path,
    ref_files: Sequence[Path],
    out_dir: Path | None = None,
    spec: ReferenceSpec | None = None,
) -> Path:
    """The reference directory; builds it first when missing or made from other data, spec or teacher."""
    from transformers import AutoTokenizer

    out_dir = out_dir or paths.reference_dir()
    spec = spec or DEMO_REFERENCE
    expected = _expected_source(spec, ref_files, teacher_dir)
    if _matches(out_dir, expected):
        log.info("reference: %s is up to date", out_dir)
        return out_dir
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    model, figures = train(read_docs(ref_files), tokenizer, spec, teacher_dir=teacher_dir)
    with paths.staged_directory(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # Figures that vary from run to run (seconds) stay out of the source record: the scoring
        # fingerprint folds that record in, and a retrain to identical weights must not change it.
        training = {**figures, "threads": torch.get_num_threads(), "torch": torch.__version__}
        (tmp / TRAINING_FILE).write_text(json.dumps(training, indent=2, sort_keys=True) + "\n")
        # Written last: its presence marks a complete reference directory.
        (tmp / SOURCE_FILE).write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    return out_dir
