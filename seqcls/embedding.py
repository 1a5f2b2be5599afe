"""The input embedding's exact sparse update: gradients and AdamW steps only for the rows the data uses.

A decoder LLM's vocabulary matrix (151,936 x hidden for Qwen2) is most of the per-step work of fine-tuning it as
a classifier on a CPU: zero-filling its dense gradient, AdamW over every row, the gradient norm over every row,
while a batch of short texts touches a few thousand rows. With `embedding_update sparse` the embedding gives a
sparse (row-indexed) gradient and `RowSparseAdamW` steps exactly the rows whose AdamW state can be non-zero:
the rows touched so far in this run (a row's moments are zero until its first gradient; with zero moments and
weight decay 0, dense AdamW leaves a row bit-for-bit where it is). Rows touched earlier keep moving on later
steps from their moments, so the set only grows; it is rebuilt from the moments after a resume.

The update itself is torch's own `adam` functional (the kernel `torch.optim.AdamW` runs: fused, foreach or
single-tensor, as the Trainer chose) over the gathered rows, so each element sees the same arithmetic as in the
dense step, with the same step count, learning rate, betas, eps and bias correction. The optimizer state keeps
torch's layout (full-size `exp_avg`, `exp_avg_sq`, `step`), so checkpoints load into a dense or sparse run alike.

Several processes (DDP): the embedding is left out of DDP's bucketed all-reduce (which takes dense gradients only)
and its rows are all-reduced by `all_reduce_rows` when DDP reduces the rest (not under `no_sync`, so accumulated
micro-batches are summed first, as in DDP): the union of the rows any process used, each process's gradient of
those rows divided by the world size and summed, which is DDP's arithmetic on the only rows where the dense
gradient is not zero. DDP broadcasts the weights it manages from process 0 at start; `replicate_across_processes`
does the same for the embedding.

Where this would not be exact it is not used (`auto` falls back to dense with a log line; `sparse` is refused):
- weight_decay > 0: dense AdamW decays every row every step, also the rows never used. Exact lazy decay would
  replay each skipped step's multiply, in order, before a row is next read (every forward, evaluation and
  prediction included) or saved (every checkpoint: a pass over the matrix per skipped step); not done;
- FSDP and DeepSpeed: they shard the flat parameters and reduce-scatter dense gradients, and ZeRO runs its own
  optimizer, so neither a row-indexed gradient nor `RowSparseAdamW` fits; refused rather than re-implemented;
- fp16 (GradScaler), an optimizer other than torch's AdamW (`optim` adamw_torch or adamw_torch_fused), an
  embedding whose weight another module shares (tied output embeddings; a sequence-classification model keeps no
  LM head, so Qwen2's `tie_word_embeddings` ties nothing there) or with `max_norm` (renormalises rows in forward).
LoRA and freeze_embeddings leave the embedding frozen: nothing to do. On a GPU `auto` stays dense: the exactness
is measured on the CPU, where index_add_ sums a row's entries in order (CUDA's uses atomics).
"""
from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from torch import nn

from .errors import UsageError

logger = logging.getLogger("seqcls")

SETTINGS = ("auto", "sparse", "dense")
EXACT_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")


def why_not_sparse(model: nn.Module, training_args) -> str | None:
    """Why the sparse update would not equal dense AdamW for this model and these arguments (None: it would)."""
    embedding = model.get_input_embeddings()
    if not isinstance(embedding, nn.Embedding):
        return f"the input embedding is a {type(embedding).__name__}, not an nn.Embedding"
    if embedding.max_norm is not None:
        return "the input embedding has max_norm (it renormalises rows in the forward pass)"
    if training_args.weight_decay > 0:
        return (f"weight_decay {training_args.weight_decay} decays every row every step (lazy decay would not be "
                "bit-identical); set weight_decay 0")
    optim = str(getattr(training_args.optim, "value", training_args.optim))
    if optim not in EXACT_OPTIMIZERS:
        return f"optim {optim} (the sparse step reproduces {' and '.join(EXACT_OPTIMIZERS)} only)"
    if training_args.fsdp or training_args.deepspeed:
        return "FSDP and DeepSpeed shard and reduce-scatter dense gradients only (DDP is supported)"
    if training_args.fp16:
        return "fp16 (the gradient scaler's unscale and skip are not reproduced)"
    weight = embedding.weight
    owners = sum(1 for m in model.modules() for p in m.parameters(recurse=False) if p is weight)
    if owners > 1:
        return "the input embedding's weight is shared with another module (tied output embeddings)"
    return None


def plan_embedding_update(model: nn.Module, training_args) -> nn.Parameter | None:
    """Resolve `embedding_update`: switch the input embedding to sparse gradients and return its weight for
    `RowSparseAdamW`, or None for the ordinary dense update. Call before the Trainer wraps the model."""
    setting = training_args.embedding_update
    embedding = model.get_input_embeddings()
    if setting == "dense" or embedding is None or not any(p.requires_grad for p in embedding.parameters()):
        return None  # dense asked for, or a frozen embedding (LoRA, freeze_embeddings): nothing to do
    reason = why_not_sparse(model, training_args)
    if reason is not None:
        if setting == "sparse":
            raise UsageError(f"embedding_update sparse would not equal dense AdamW here: {reason}; "
                             "use --embedding_update auto (or dense)")
        logger.info("embedding_update auto: dense, because %s", reason)
        return None
    if setting == "auto" and training_args.device.type != "cpu":
        # measured bit-identical on CPU only; a GPU's index_add_ sums repeated rows with atomics, in no fixed order
        logger.info("embedding_update auto: dense on %s (the sparse update is verified exact on CPU only; "
                    "--embedding_update sparse to use it)", training_args.device.type)
        return None
    embedding.sparse = True
    # each backward's rows summed now, in the dense backward's order: accumulated micro-batches then add up as
    # dense gradients do (torch's coalesce sums repeated rows in another order: last-bit differences)
    embedding.weight.register_hook(coalesce_in_order)
    if training_args.world_size > 1:  # DDP must not bucket it: its rows are all-reduced by all_reduce_rows
        from torch.nn.parallel import DistributedDataParallel

        name = next(n for n, p in model.named_parameters() if p is embedding.weight)
        ignored = [*getattr(model, "_ddp_params_and_buffers_to_ignore", []), name]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    logger.info("embedding_update %s: sparse gradients and exact AdamW steps for the %d-row input embedding's "
                "touched rows only", setting, embedding.weight.shape[0])
    return embedding.weight


def coalesce_in_order(grad: torch.Tensor) -> torch.Tensor:
    """A sparse row gradient with each row's entries summed in the order given (index_add_, as the dense embedding
    backward sums them), so the result equals the dense gradient bit for bit."""
    if not grad.is_sparse:
        return grad
    index, values = grad._indices()[0], grad._values()
    rows, position = torch.unique(index, sorted=True, return_inverse=True)
    summed = values.new_zeros((rows.numel(), *values.shape[1:])).index_add_(0, position, values)
    return torch.sparse_coo_tensor(rows.unsqueeze(0), summed, grad.shape, is_coalesced=True)


def all_reduce_rows(grad: torch.Tensor, group=None) -> torch.Tensor:
    """DDP's average of a row-sparse gradient over the processes: the rows any process used, each process's
    gradient of them times 1/world size (as DDP's reducer scales before its sum), summed by one dense all-reduce
    of just those rows. Every element sees DDP's arithmetic (rows a process did not use add its exact zero)."""
    world_size = dist.get_world_size(group)
    grad = coalesce_in_order(grad)
    rows, values = grad._indices()[0], grad._values()
    # the union of the used rows as a one-byte mask per row (152 kB for Qwen2's vocabulary): one fixed-size
    # all-reduce, where gathering each process's row ids would need their counts first
    used = torch.zeros(grad.shape[0], dtype=torch.uint8, device=values.device)
    used[rows] = 1
    dist.all_reduce(used, op=dist.ReduceOp.MAX, group=group)
    union = used.nonzero().squeeze(1)
    block = values.new_zeros((union.numel(), *values.shape[1:]))
    block[torch.searchsorted(union, rows)] = values * (1.0 / world_size)
    dist.all_reduce(block, group=group)
    return torch.sparse_coo_tensor(union.unsqueeze(0), block, grad.shape, is_coalesced=True)


def replicate_across_processes(weight: nn.Parameter, must_sync) -> None:
    """Under several processes, do for the sparse embedding what DDP does for the weights it manages: broadcast
    it from process 0 (call once the model is on its device), and average its gradient over the processes
    whenever `must_sync()` (DDP's `require_backward_grad_sync`, False under `no_sync`) says DDP reduces the rest."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    with torch.no_grad():
        dist.broadcast(weight, src=0)

    def reduce() -> None:
        weight.grad = all_reduce_rows(weight.grad)

    def after_accumulation(param: nn.Parameter) -> None:
        if must_sync():
            # run at the end of this backward, after DDP's own finalize (queued when its last bucket was
            # launched), so that every process issues its collectives in the same order
            torch.autograd.Variable._execution_engine.queue_callback(reduce)

    weight.register_post_accumulate_grad_hook(after_accumulation)


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` for parameters of which some have sparse gradients: the same global norm
    (a sparse gradient's norm is its coalesced values' norm; the zero rows add nothing) and the same scaling."""
    from torch.nn.utils import get_total_norm

    params = [p for p in parameters if p.grad is not None]
    for p in params:
        if p.grad.is_sparse and not p.grad.is_coalesced():
            p.grad = coalesce_in_order(p.grad)  # accumulated micro-batches summed, as in the dense gradient
    grads = [p.grad._values() if p.grad.is_sparse else p.grad for p in params]
    total = get_total_norm(grads, 2.0)
    if max_norm != float("inf"):  # as torch.nn.utils.clip_grads_with_norm_ (it reads p.grad, not our values)
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        torch._foreach_mul_(grads, coef.to(grads[0].device))
    return total


class RowSparseAdamW(torch.optim.AdamW):
    """torch.optim.AdamW whose step for one parameter with a sparse gradient (the input embedding) updates only
    the rows touched so far, with torch's own kernel: exactly what dense AdamW computes with weight decay 0."""

    def __init__(self, params, sparse_weight: nn.Parameter, **kwargs):
        super().__init__(params, **kwargs)
        self.sparse_weight = sparse_weight
        self._touched: torch.Tensor | None = None  # bool per row: has had a gradient (so may have non-zero moments)

    @classmethod
    def from_optimizer(cls, optimizer: torch.optim.Optimizer, sparse_weight: nn.Parameter) -> "RowSparseAdamW":
        """The same parameter groups and settings as the Trainer's AdamW (before any step)."""
        if type(optimizer) is not torch.optim.AdamW:
            raise UsageError(f"embedding_update sparse reproduces torch.optim.AdamW only, not "
                             f"{type(optimizer).__name__}; use --embedding_update dense")
        group = next((g for g in optimizer.param_groups if any(p is sparse_weight for p in g["params"])), None)
        if group is None or group["amsgrad"] or group["maximize"] or group["weight_decay"] != 0:
            raise UsageError("embedding_update sparse needs the embedding trained by AdamW with weight decay 0, "
                             "no amsgrad, no maximize; use --embedding_update dense")
        defaults = {k: v for k, v in optimizer.defaults.items() if k != "decoupled_weight_decay"}
        return cls(optimizer.param_groups, sparse_weight, **defaults)

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._touched = None  # rebuilt from the loaded moments at the next step

    @torch.no_grad()
    def step(self, closure=None):
        weight = self.sparse_weight
        grad = weight.grad
        if grad is None or not grad.is_sparse:
            return super().step(closure)
        if closure is not None:
            raise RuntimeError("RowSparseAdamW.step does not take a closure")
        weight.grad = None  # the other parameters: AdamW's own step
        try:
            loss = super().step()
        finally:
            weight.grad = grad
        self._step_rows(coalesce_in_order(grad))
        return loss

    def _step_rows(self, grad: torch.Tensor) -> None:
        from torch.optim.adam import adam
        from torch.optim.optimizer import _get_scalar_dtype

        weight = self.sparse_weight
        group = next(g for g in self.param_groups if any(p is weight for p in g["params"]))
        state = self.state[weight]
        if len(state) == 0:  # as torch.optim.Adam._init_group, so state_dict() has torch's layout
            fused_or_capturable = group["capturable"] or group["fused"]
            state["step"] = (torch.zeros((), dtype=_get_scalar_dtype(is_fused=group["fused"]), device=weight.device)
                             if fused_or_capturable else torch.tensor(0.0, dtype=_get_scalar_dtype()))
            state["exp_avg"] = torch.zeros_like(weight, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(weight, memory_format=torch.preserve_format)
        if self._touched is None:  # a fresh run: none; after a resume: the rows with any non-zero moment
            self._touched = (state["exp_avg"] != 0).any(dim=1) | (state["exp_avg_sq"] != 0).any(dim=1)
        index, values = grad.indices()[0], grad.values()
        self._touched[index] = True
        rows = self._touched.nonzero().squeeze(1)
        row_grad = values.new_zeros((rows.numel(), weight.shape[1]))
        row_grad[torch.searchsorted(rows, index)] = values
        param, exp_avg, exp_avg_sq = (t.index_select(0, rows) for t in (weight, state["exp_avg"], state["exp_avg_sq"]))
        beta1, beta2 = group["betas"]
        adam([param], [row_grad], [exp_avg], [exp_avg_sq], [], [state["step"]], amsgrad=False, has_complex=False,
             beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
             maximize=False, foreach=group["foreach"], capturable=group["capturable"],
             differentiable=group["differentiable"], fused=group["fused"], grad_scale=getattr(self, "grad_scale", None),
             found_inf=getattr(self, "found_inf", None), decoupled_weight_decay=True)
        weight.index_copy_(0, rows, param)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
