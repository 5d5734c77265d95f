"""One iteration of the minimax game: k discriminator updates, then one generator update.

Update D (k times, each on a fresh real batch and fresh z): maximize log D(x) + log(1 - D(G(z))).
Update G (once, D frozen with requires_grad_(False)): minimize log(1 - D(G(z))) (`minimax`)
or maximize log D(G(z)) (`non_saturating`).
G and D may be DDP wrappers; freezing D means DDP all-reduces nothing of D during the G update.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from . import losses
from .augment import diff_augment, jitter, parse_policy, translation
from .sampling import sample_latent

RealBatch = tuple[torch.Tensor, torch.Tensor | None]
PRECISIONS = ("fp32", "bf16")


@dataclass
class StepStats:
    """What one iteration reports; d_* are means of sigmoid(logit), value is V's estimate."""

    loss_d: float
    loss_g: float
    d_real: float
    d_fake: float
    value: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (or the module itself)."""
    return getattr(module, "module", module)


class EMA:
    """Exponential moving average of G's weights: ema = beta * ema + (1 - beta) * g; buffers copied."""

    def __init__(self, generator: nn.Module, beta: float):
        self.beta = beta
        self.model = copy.deepcopy(unwrap(generator)).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: nn.Module) -> None:
        src = unwrap(generator)
        for p_ema, p in zip(self.model.parameters(), src.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - self.beta)
        for b_ema, b in zip(self.model.buffers(), src.buffers()):
            b_ema.copy_(b)


@dataclass(frozen=True)
class GameOptions:
    """What one iteration computes besides G and D: the rules of the game (k, G's loss), its
    regularizers, the EMA, and the arithmetic; filled once from the config (pipelines.config.build)."""
    k: int = 1
    g_loss: str = "non_saturating"
    ema_beta: float | None = None
    reuse_fake: bool = False
    channels_last: bool = False
    augment: str | None = None
    mode_seeking: float = 0.0
    r1: float = 0.0
    r1_every: int = 1
    consistency: float = 0.0
    label_smoothing: float = 0.0
    real_jitter: float = 0.0
    aux_weight: float = 1.0
    precision: str = "fp32"


class Game:
    """Holds G, D, their optimizers and the rules of one iteration.

    `label_prior` (conditional models) is the class distribution that generated labels are drawn
    from; matching the data's prior keeps D from telling real from fake by label frequency alone.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, options: GameOptions | None = None, *,
                 label_prior: torch.Tensor | None = None):
        o = options or GameOptions()
        self.options = o
        k, g_loss, ema_beta, reuse_fake, channels_last = o.k, o.g_loss, o.ema_beta, o.reuse_fake, o.channels_last
        augment, mode_seeking, r1, r1_every, consistency = o.augment, o.mode_seeking, o.r1, o.r1_every, o.consistency
        label_smoothing, real_jitter, aux_weight, precision = o.label_smoothing, o.real_jitter, o.aux_weight, o.precision
        if k < 1:
            raise ValueError(f"k={k}: the game needs at least one discriminator update per iteration")
        if g_loss not in losses.G_LOSSES:
            raise ValueError(f"g_loss={g_loss!r} is not one of {losses.G_LOSSES}")
        self.G, self.D, self.opt_g, self.opt_d = generator, discriminator, opt_g, opt_d
        self.k, self.g_loss = k, g_loss
        g = unwrap(generator)
        self.z_dim, self.num_classes = g.z_dim, g.num_classes
        if self.num_classes and label_prior is None:
            label_prior = torch.full((self.num_classes,), 1.0 / self.num_classes)
        self.label_prior = label_prior
        # The G update may take the generated batch of the iteration's last D update (made with its
        # graph kept) instead of a fresh one: one G forward fewer per iteration, as DCGAN's reference
        # loop does. Off: the seed's algorithm, a fresh noise batch for the G update.
        self.reuse_fake = reuse_fake
        # NHWC tensors for G, D and the real batches: faster convolutions on CPU (BENCHMARKS.md).
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.ema = EMA(generator, ema_beta) if ema_beta else None  # in G's layout: its updates stay elementwise
        # DiffAugment: the same random transformations of real and generated images before every D call.
        self.augment = parse_policy(augment)
        # MSGAN's mode-seeking term in G's loss with this weight (0: the seed's G loss alone). Its G
        # batch pairs row i with row i + n/2: the same label, another z.
        if mode_seeking < 0:
            raise ValueError(f"mode_seeking={mode_seeking}: a weight >= 0")
        self.mode_seeking = float(mode_seeking)
        # R1 on the real batch, weight gamma = r1; lazily (StyleGAN2) every `r1_every` D updates with
        # the weight scaled by that interval, so the penalty's strength per update stays the same.
        if r1 < 0 or r1_every < 1:
            raise ValueError(f"r1={r1}, r1_every={r1_every}: a weight >= 0 and an interval >= 1")
        self.r1, self.r1_every = float(r1), int(r1_every)
        self.d_updates = 0
        # Balanced consistency regularization with this weight: D's logits for each real and generated
        # image pulled toward its logits for a translated copy (0: off).
        if consistency < 0:
            raise ValueError(f"consistency={consistency}: a weight >= 0")
        self.consistency = float(consistency)
        # One-sided label smoothing: D's target for real images is 1 - label_smoothing (0: the seed's 1).
        if not 0 <= label_smoothing < 0.5:
            raise ValueError(f"label_smoothing={label_smoothing}: a share in [0, 0.5)")
        self.label_smoothing = float(label_smoothing)
        # Real images jittered (small random rotation, scale and shear) before D sees them: the
        # distribution G learns is the data under that jitter (0: the data as it is).
        if real_jitter < 0:
            raise ValueError(f"real_jitter={real_jitter}: a strength >= 0")
        self.real_jitter = float(real_jitter)
        # AC-GAN (a D with a class head, `d_conditioning='aux'`): D's loss adds the cross-entropy of its
        # class logits on the real batch, G's the cross-entropy of D's class logits on its generated
        # batch against the labels it was asked for, both with this weight.
        if aux_weight < 0:
            raise ValueError(f"aux_weight={aux_weight}: a weight >= 0")
        self.aux_weight = float(aux_weight) if getattr(unwrap(discriminator), "classes", None) is not None else 0.0
        # bf16: every iteration's forward passes under bfloat16 autocast (weights, optimizer state,
        # losses and the EMA stay fp32); fp32: the seed's arithmetic throughout.
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")
        self.precision = precision

    def _d(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """D's logits for `x`, augmented first when the game augments."""
        return self._d_classes(x, y, False)[0]

    def _d_classes(self, x: torch.Tensor, y: torch.Tensor | None,
                   classes: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's logits for `x` and, with `classes` and a class head, the cross-entropy of its class
        logits against `y` (else None)."""
        if self.augment:
            x = diff_augment(x, self.augment).contiguous(memory_format=self.memory_format)
        if not (classes and self.aux_weight):
            return self.D(x, y).float(), None  # the losses in fp32 under bf16 autocast
        logits, class_logits = self.D(x, y, classes=True)
        return logits.float(), nn.functional.cross_entropy(class_logits.float(), y)

    def _shifted(self, x: torch.Tensor) -> torch.Tensor:
        """`x` translated at random (consistency regularization's augmentation), in the game's layout."""
        return translation(x).contiguous(memory_format=self.memory_format)

    @property
    def device(self) -> torch.device:
        return next(unwrap(self.G).parameters()).device

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fresh z ~ N(0, I) and, when conditional, labels drawn from the label prior."""
        return sample_latent(n, self.z_dim, self.label_prior if self.num_classes else None, generator, self.device)

    def _g_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(z, y) of the generated batch the G update learns from: fresh, and with the mode-seeking
        term its second half repeats the first half's labels."""
        z, y = self.sample_latent(n)
        if self.mode_seeking and y is not None:
            h = n // 2
            y = torch.cat([y[:h], y[:h], y[2 * h:]])
        return z, y

    def discriminator_step(self, x: torch.Tensor, y: torch.Tensor | None,
                           generated: tuple[torch.Tensor, torch.Tensor | None] | None = None
                           ) -> tuple[float, float, float, float]:
        """One D update on a real batch and a fresh generated one (or `generated`, a batch made by the
        caller; it is detached here); returns (loss_d, D(x), D(G(z)), V)."""
        self.D.requires_grad_(True)
        if generated is None:
            z, y_fake = self.sample_latent(x.shape[0])
            with torch.no_grad():
                fake = self.G(z, y_fake)
        else:
            fake, y_fake = generated[0].detach(), generated[1]
        penalize = self.r1 > 0 and self.d_updates % self.r1_every == 0
        self.d_updates += 1
        if penalize:
            x = x.detach().requires_grad_(True)
        real_logits, real_classes = self._d_classes(x, y)
        fake_logits = self._d(fake, y_fake)
        loss = losses.discriminator_loss(real_logits, fake_logits, self.label_smoothing)
        if real_classes is not None:
            loss = loss + self.aux_weight * real_classes
        if penalize:
            loss = loss + 0.5 * self.r1 * self.r1_every * losses.r1_penalty(real_logits, x)
        if self.consistency:
            loss = loss + self.consistency * (
                losses.consistency_penalty(real_logits, self._d(self._shifted(x.detach()), y))
                + losses.consistency_penalty(fake_logits, self._d(self._shifted(fake), y_fake)))
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        with torch.no_grad():  # V itself: without the smoothed target or the penalties D's loss adds
            v = losses.value(real_logits, fake_logits).item()
        return (loss.item(), torch.sigmoid(real_logits).mean().item(), torch.sigmoid(fake_logits).mean().item(), v)

    def generator_step(self, n: int, generated: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None
                       ) -> float:
        """One G update with D frozen (no gradient reaches D's parameters), on a fresh generated batch
        of `n` or on `generated` (images, labels, z; made with its graph by the last D update)."""
        self.D.requires_grad_(False)
        try:
            if generated is None:
                z, y = self._g_batch(n)
                fake = self.G(z, y)
            else:
                fake, y, z = generated
            fake_logits, fake_classes = self._d_classes(fake, y)
            loss = game_loss = losses.generator_loss(fake_logits, self.g_loss)
            if fake_classes is not None:
                loss = loss + self.aux_weight * fake_classes
            if self.mode_seeking:
                loss = loss + self.mode_seeking * losses.mode_seeking(fake, z)
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
        finally:
            self.D.requires_grad_(True)
        if self.ema is not None:
            self.ema.update(self.G)
        return game_loss.item()  # the game's G loss, comparable with and without the mode-seeking term

    def step(self, next_real: Callable[[], RealBatch] | Iterator[RealBatch]) -> StepStats:
        """One iteration: k D updates, each on a fresh real batch, then one G update."""
        fetch = next_real if callable(next_real) else (lambda: next(next_real))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self._step(fetch)

    def _step(self, fetch: Callable[[], RealBatch]) -> StepStats:
        d_stats = []
        n = 0
        generated = None
        for i in range(self.k):
            x, y = fetch()
            x = jitter(x, self.real_jitter).contiguous(memory_format=self.memory_format)
            n = x.shape[0]
            if self.reuse_fake and i == self.k - 1:
                z, y_fake = self._g_batch(n)
                generated = (self.G(z, y_fake), y_fake, z)  # its graph is kept for the G update
            d_stats.append(self.discriminator_step(x, y, None if generated is None else generated[:2]))
        loss_g = self.generator_step(n, generated)
        mean = [sum(s[i] for s in d_stats) / len(d_stats) for i in range(4)]
        return StepStats(loss_d=mean[0], loss_g=loss_g, d_real=mean[1], d_fake=mean[2], value=mean[3])

    def state_dict(self) -> dict:
        """G, D, both optimizers, the EMA generator and the D-update count (where the lazy R1 penalty
        falls); enough to continue the game exactly."""
        state = {"G": unwrap(self.G).state_dict(), "D": unwrap(self.D).state_dict(),
                 "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "d_updates": self.d_updates}
        if self.ema is not None:
            state["G_ema"] = self.ema.model.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.G).load_state_dict(state["G"])
        unwrap(self.D).load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.d_updates = int(state.get("d_updates", 0))  # states written before the count: from 0
        if self.ema is not None and "G_ema" in state:
            self.ema.model.load_state_dict(state["G_ema"])


def adam_pair(generator: nn.Module, discriminator: nn.Module, lr_g: float, lr_d: float,
              betas: tuple[float, float] = (0.5, 0.999)) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for G and D with DCGAN's beta1 = 0.5 by default."""
    return (torch.optim.Adam(generator.parameters(), lr=lr_g, betas=betas),
            torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=betas))
