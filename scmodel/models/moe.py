"""The 17B mixture-of-experts discrete diffusion transformer (the seed's headline model).

Same token conventions as the mini model: one token per gene position (gene identity embedding +
value token, mask token ``n_tokens``), a timestep, and logits over the value vocabulary.

Shape: ``n_layers`` pre-norm blocks of multi-head self-attention; every ``moe_every``-th block's
MLP is a DeepSpeed MoE layer (``deepspeed.moe.layer.MoE``: top-k routing over ``n_experts``
expert MLPs, sharded over ``ep_size`` ranks by expert parallelism). With 36 layers and
``moe_every=3`` the MoE blocks are 3, 6, ..., 36 (24 dense + 12 MoE): each group of three starts
with dense blocks, so tokens are routed on contextual features rather than on their raw gene
embedding (block 1 would route by gene identity alone), and expert capacity is spread evenly over
depth, as GShard/Switch interleave MoE with dense layers.

Timestep conditioning is adaLN-single (PixArt-alpha): one shared projection of the timestep
embedding to the six shift/scale/gate vectors, plus a learned per-block offset table. A per-block
adaLN projection (as in the mini model's ``Block``) would add 6 d^2 per block: 2.0B parameters at
this shape for a scalar input.

Perturbation conditioning (LoRA adapters): a perturbation code ``c`` (``cond_dim``) is computed
from the target gene, the sign and log2 fold change (``PerturbationEncoder`` of the conditional
model) and a control-set summary (mean over control cells of a linear embedding, so the set's order
does not matter). Every attention projection (q, kv, out) and dense MLP projection (up, down) gets a
low-rank update ``x -> B (g(c) * A x)``: ``A`` (rank r) and ``B`` are shared, the per-rank gates
``g(c)`` come from the perturbation, so each perturbation selects its own rank-r direction mix. MoE
blocks get the same adapter in parallel to the whole expert sub-layer (the experts live behind
DeepSpeed's all-to-all, which routes tokens, not per-cell codes). ``B`` starts at zero, so adapters
begin as the identity on the pretrained model; ``freeze_base()`` leaves only adapters and encoders
trainable (perturbation fine-tuning with the 17B base frozen). Without perturbation inputs the
adapters are skipped and the model is the unconditional base. A cross-attention block per layer
would instead cost ~1.4B parameters at this shape.

Construction imports DeepSpeed (only here and in ``scmodel.engines.deepspeed``); the model can be
built on the ``meta`` device to count parameters and FLOPs without memory (``scmodel.plan``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .conditional import PerturbationEncoder
from .layers import MLP, Attention, BlockConfig, timestep_embedding


@dataclass(frozen=True, kw_only=True, slots=True)
class MoEConfig:
    n_genes: int = 2000
    """Sequence length: the gene positions (HVGs)."""
    n_tokens: int = 64
    """Value vocabulary; the mask token is ``n_tokens``."""
    dim: int = 3072
    n_heads: int = 24
    n_kv_heads: int = 24
    n_layers: int = 36
    moe_every: int = 3
    """Every ``moe_every``-th block (counting from 1) is an MoE block."""
    mlp_ratio: float = 4.0
    n_experts: int = 16
    top_k: int = 2
    ep_size: int = 1
    """Expert-parallel ranks: each holds ``n_experts / ep_size`` experts of every MoE layer."""
    capacity_factor: float = 1.25
    eval_capacity_factor: float = 2.0
    min_capacity: int = 4
    lora_rank: int = 16
    cond_dim: int = 512
    """Width of the perturbation code that gates the adapters."""
    gene_vocab: int = 36_601
    checkpoint_activations: bool = False
    """Recompute each block in the backward pass (keeps only block inputs; what the 17B plan assumes)."""

    def __post_init__(self) -> None:
        BlockConfig(dim=self.dim, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads)  # checks the head split
        if self.top_k not in (1, 2):
            raise ValueError(f"top_k {self.top_k}: DeepSpeed's MoE gate supports top-1 and top-2 routing only")
        if self.ep_size < 1 or self.n_experts % self.ep_size:
            raise ValueError(f"ep_size {self.ep_size} does not divide n_experts {self.n_experts}: every expert-parallel "
                             f"rank must hold the same number of experts (choose a divisor of {self.n_experts})")
        if self.moe_every < 1 or self.n_layers < self.moe_every:
            raise ValueError(f"moe_every {self.moe_every} must be in [1, n_layers={self.n_layers}]")

    @property
    def mask_id(self) -> int:
        return self.n_tokens

    @property
    def hidden(self) -> int:
        return int(self.dim * self.mlp_ratio)

    def is_moe(self, layer: int) -> bool:
        return (layer + 1) % self.moe_every == 0

    @property
    def n_moe(self) -> int:
        return sum(self.is_moe(i) for i in range(self.n_layers))

    def block(self) -> BlockConfig:
        return BlockConfig(dim=self.dim, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads, mlp_ratio=self.mlp_ratio)


class LoRA(nn.Module):
    """``x -> B (g(c) * A x)``: a rank-r update whose per-rank gates come from the perturbation code."""

    def __init__(self, d_in: int, d_out: int, rank: int, cond_dim: int):
        super().__init__()
        self.down = nn.Linear(d_in, rank, bias=False)
        self.up = nn.Linear(rank, d_out, bias=False)
        self.gate = nn.Linear(cond_dim, rank)
        nn.init.zeros_(self.up.weight)  # identity at the start of fine-tuning

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x) * self.gate(code).unsqueeze(1))  # (B, L, d_out)


class Adapted(nn.Module):
    """A layers.py module (Attention, MLP) with LoRA updates added to the outputs of its named
    ``nn.Linear`` projections through forward hooks, so the module's own forward is reused."""

    def __init__(self, base: nn.Module, names: tuple[str, ...], rank: int, cond_dim: int):
        super().__init__()
        self.base = base
        self.adapters = nn.ModuleDict({n: LoRA(getattr(base, n).in_features, getattr(base, n).out_features, rank, cond_dim)
                                       for n in names})
        self._code: torch.Tensor | None = None
        for n in names:
            getattr(base, n).register_forward_hook(self._hook(n))

    def _hook(self, name: str):
        def add_update(_module, inputs, output):
            return output if self._code is None else output + self.adapters[name](inputs[0], self._code)
        return add_update

    def forward(self, x: torch.Tensor, code: torch.Tensor | None) -> torch.Tensor:
        self._code = code  # set on every call, so a checkpointed recompute sees the same code
        return self.base(x)


def expert_mlp(cfg: MoEConfig) -> nn.Module:
    return MLP(cfg.block())


class MoEBlock(nn.Module):
    """Pre-norm block: self-attention, then a dense MLP or a DeepSpeed MoE layer; adaLN-single."""

    def __init__(self, cfg: MoEConfig, moe: bool):
        super().__init__()
        bc = cfg.block()
        self.norm1 = nn.LayerNorm(cfg.dim, elementwise_affine=False)
        self.attn = Adapted(Attention(bc), ("q", "kv", "out"), cfg.lora_rank, cfg.cond_dim)
        self.norm2 = nn.LayerNorm(cfg.dim, elementwise_affine=False)
        self.table = nn.Parameter(torch.zeros(6, cfg.dim))  # this block's offset to the shared modulation
        if moe:
            from deepspeed.moe.layer import MoE

            self.moe = MoE(cfg.dim, expert_mlp(cfg), num_experts=cfg.n_experts, ep_size=cfg.ep_size, k=cfg.top_k,
                           capacity_factor=cfg.capacity_factor, eval_capacity_factor=cfg.eval_capacity_factor,
                           min_capacity=cfg.min_capacity, drop_tokens=True)
            self.moe_adapter = LoRA(cfg.dim, cfg.dim, cfg.lora_rank, cfg.cond_dim)
            self.mlp = None
        else:
            self.moe = self.moe_adapter = None
            self.mlp = Adapted(MLP(bc), ("up", "down"), cfg.lora_rank, cfg.cond_dim)

    def forward(self, x: torch.Tensor, modulation: torch.Tensor, code: torch.Tensor | None):
        shift1, scale1, gate1, shift2, scale2, gate2 = (modulation + self.table).unsqueeze(1).unbind(2)  # (B, 1, D) each
        x = x + (1 + gate1) * self.attn(self.norm1(x) * (1 + scale1) + shift1, code)
        h = self.norm2(x) * (1 + scale2) + shift2
        if self.moe is None:
            return x + (1 + gate2) * self.mlp(h, code), x.new_zeros(())
        out, aux, _ = self.moe(h)
        if code is not None:
            out = out + self.moe_adapter(h, code)
        return x + (1 + gate2) * out, aux


class PerturbationCode(nn.Module):
    """Target gene / sign / log2FC tokens and a control-set summary -> one code per cell."""

    def __init__(self, cfg: MoEConfig):
        super().__init__()
        c = cfg.cond_dim
        self.perturbation = PerturbationEncoder(cfg.gene_vocab, c)
        self.control = nn.Linear(cfg.n_genes, c)
        self.none_control = nn.Parameter(torch.zeros(c))
        self.mix = nn.Sequential(nn.Linear(4 * c, c), nn.SiLU(), nn.Linear(c, c))

    def forward(self, batch: int, device, target_gene=None, sign=None, log2fc=None, control=None) -> torch.Tensor | None:
        if target_gene is None and control is None:
            return None  # unconditional: adapters off
        if target_gene is None:
            target_gene = torch.full((batch,), -1, dtype=torch.long, device=device)
        sign = torch.zeros(batch, dtype=torch.long, device=device) if sign is None else sign
        log2fc = torch.zeros(batch, device=device) if log2fc is None else log2fc
        pert = self.perturbation(target_gene, sign, log2fc).flatten(1)  # (B, 3c)
        ctrl = self.none_control.expand(batch, -1) if control is None else self.control(control.float()).mean(dim=1)
        return self.mix(torch.cat([pert, ctrl], dim=1))  # (B, c)


class MoEDiffusionModel(nn.Module):
    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.token_emb = nn.Embedding(cfg.n_tokens + 1, d)  # + mask token
        self.gene_emb = nn.Embedding(cfg.n_genes, d)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))  # adaLN-single, shared by all blocks
        self.blocks = nn.ModuleList(MoEBlock(cfg, cfg.is_moe(i)) for i in range(cfg.n_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.n_tokens)
        self.code = PerturbationCode(cfg)
        if self.token_emb.weight.device.type != "meta":
            nn.init.normal_(self.token_emb.weight, std=0.02)
            nn.init.normal_(self.gene_emb.weight, std=0.02)
            nn.init.zeros_(self.modulation[1].weight)
            nn.init.zeros_(self.modulation[1].bias)
        self.aux_loss: torch.Tensor | None = None
        """Mean load-balancing loss of the MoE layers in the last forward (added to the training loss)."""

    def forward(self, tokens: torch.Tensor, t: torch.Tensor, gene_index: torch.Tensor | None = None,
                target_gene=None, sign=None, log2fc=None, control=None, **_: object) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device) if gene_index is None else gene_index
        x = self.token_emb(tokens) + self.gene_emb(positions).unsqueeze(0)  # (B, L, D)
        t_emb = self.time_mlp(timestep_embedding(t, self.cfg.dim).to(x.dtype))  # (B, D)
        modulation = self.modulation(t_emb).view(-1, 6, self.cfg.dim)  # (B, 6, D)
        code = self.code(tokens.shape[0], tokens.device, target_gene, sign, log2fc, control)
        aux = []
        for block in self.blocks:
            if self.cfg.checkpoint_activations and self.training:
                x, a = checkpoint(block, x, modulation, code, use_reentrant=False)
            else:
                x, a = block(x, modulation, code)
            if block.moe is not None:
                aux.append(a)
        self.aux_loss = torch.stack(aux).mean() if aux else None
        return self.head(self.norm(x))  # (B, L, n_tokens)

    def adapter_parameters(self):
        """The parameters perturbation fine-tuning trains: LoRA adapters and the conditioning encoders."""
        for name, p in self.named_parameters():
            if ".adapters." in name or name.startswith("code.") or ".moe_adapter." in name:
                yield p

    def freeze_base(self) -> None:
        """Train only the adapters and conditioning encoders (the base keeps its pretrained weights)."""
        keep = {id(p) for p in self.adapter_parameters()}
        for p in self.parameters():
            p.requires_grad_(id(p) in keep)


def expert_parameter_count(cfg: MoEConfig) -> int:
    """One expert MLP (up and down projections with biases)."""
    return 2 * cfg.dim * cfg.hidden + cfg.hidden + cfg.dim


def parameter_formula(cfg: MoEConfig, local: bool = False) -> dict[str, int]:
    """Parameter counts from the config alone (the test checks them against a meta-device build).
    ``local``: what one expert-parallel rank holds (``n_experts / ep_size`` experts per MoE layer)."""
    d, h, r, c = cfg.dim, cfg.hidden, cfg.lora_rank, cfg.cond_dim
    kv = 2 * cfg.n_kv_heads * (d // cfg.n_heads)

    def lora(d_in: int, d_out: int) -> int:
        return r * d_in + r * d_out + c * r + r

    attention = d * d + d * kv + d * d + lora(d, d) + lora(d, kv) + lora(d, d) + 6 * d  # + modulation offsets
    dense_mlp = 2 * d * h + h + d + lora(d, h) + lora(h, d)
    experts_per_layer = cfg.n_experts // (cfg.ep_size if local else 1)
    moe_shared = d * cfg.n_experts + lora(d, d)  # gate + parallel adapter
    expert = expert_parameter_count(cfg)
    embeddings = (cfg.n_tokens + 1) * d + cfg.n_genes * d
    time = 2 * (d * d + d) + d * 6 * d + 6 * d  # time MLP, shared adaLN projection
    stem = embeddings + time + 2 * d + d * cfg.n_tokens + cfg.n_tokens  # + final norm, head
    perturbation = (cfg.gene_vocab + 1) * c + 3 * c + (c + c) + (c * c + c)  # gene table, sign, log2FC MLP
    code = perturbation + cfg.n_genes * c + c + c + (4 * c * c + c) + (c * c + c)  # + control summary, mixer
    n_moe, n_dense = cfg.n_moe, cfg.n_layers - cfg.n_moe
    experts = n_moe * experts_per_layer * expert
    total = stem + code + cfg.n_layers * attention + n_dense * dense_mlp + n_moe * moe_shared + experts
    active = total - experts + n_moe * cfg.top_k * expert
    return {"total": total, "experts": experts, "active_per_token": active, "adapters_and_encoders":
            code + cfg.n_layers * (lora(d, d) * 2 + lora(d, kv)) + n_dense * (lora(d, h) + lora(h, d)) + n_moe * lora(d, d)}
