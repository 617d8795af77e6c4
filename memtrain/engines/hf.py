"""In-process generation with the trainer's own Hugging Face causal LM.

The decoding loop is written out rather than delegated to `model.generate` for two reasons: every
random draw must come from a caller-owned torch.Generator (so that a rollout is exactly reproducible
and its state can be checkpointed with the trainer's), and GRPO needs the log-prob of each sampled
token under the distribution it was drawn from, which `generate` does not hand back cheaply.

The engine shares the model object with the trainer: weights are never copied, so a rollout always
uses the current policy.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Sequence

import torch

from memtrain.engines import attention, linear_kernels
from memtrain.engines.base import Generation, Sampling, check_prompts
from memtrain.engines.sampling import choose
from memtrain.engines.slot_cache import SlotCache


class HFEngine:
    """Continuous batching from a causal LM that follows the transformers 5 forward/cache API.

    Up to `max_batch_size` sequences decode together, so one weight read per step serves them all;
    when one stops, the next waiting prompt (shortest first) takes its slot at once instead of the
    slot idling until the slowest sequence of a fixed micro-batch ends.

    Reproducibility: a call first draws a (prompts, max_new_tokens) block of uniforms from the
    caller's generator, row i for prompt i in the caller's order, and prompt i's t-th token inverts
    its distribution at uniform (i, t) (memtrain.engines.sampling). A call's tokens therefore depend
    on the generator's state and the prompts only, never on the batch size, the slot a prompt lands
    in or when it is admitted, and the generator advances by the same amount whatever stops.
    Greedy calls draw nothing.

    `linear` picks the kernel of the linear layers while decoding (memtrain.engines.linear_kernels).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        pad_token_id: int,
        generator: torch.Generator,
        max_batch_size: int = 64,
        linear: str = "auto",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        device = _device_of(model)
        if not _same_device(generator.device, device):
            # Uniforms drawn on another device would be copied every step; failing here names the
            # cause before any compute is spent.
            raise ValueError(
                f"the generator is on {generator.device} but the model is on {device}: "
                f"create it with torch.Generator(device={str(device)!r})"
            )
        self.model = model
        self.pad_token_id = pad_token_id
        self.generator = generator
        self.max_batch_size = max_batch_size
        self.linear = linear_kernels.resolve(linear, device, next(model.parameters()).dtype)
        # One kernel for the engine's life, entered per call: it may keep state across calls (packed weights).
        self._linear_kernel = linear_kernels.LINEAR_KERNELS[self.linear](max_batch_size)
        # Only the last position's logits are ever used; without this the prefill would materialise
        # a (batch, prompt length, vocabulary) tensor, by far the largest activation for long prompts.
        self._logits_kwargs = (
            {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        )

    def generate(self, prompts: Sequence[Sequence[int]], sampling: Sampling) -> list[Generation]:
        """One Generation per prompt, in the prompts' order."""
        check_prompts(prompts)
        if not prompts:
            return []
        uniforms = (
            None
            if sampling.temperature == 0
            else torch.rand(
                (len(prompts), sampling.max_new_tokens), generator=self.generator, device=self.generator.device
            )
        )
        # Per module, not model.train(flag): a trainer may keep some submodules in eval on purpose.
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        try:
            with (
                torch.inference_mode(),
                self._linear_kernel.scope(self.model),
                attention.decoding_attention(self.model, _device_of(self.model)),
            ):
                return _Call(self, prompts, sampling, uniforms).run()
        finally:
            for module, training in modes:
                module.training = training


class _Call:
    """One generate call: a fixed set of cache slots, filled from a length-sorted queue and refilled as
    sequences finish. Slot bookkeeping lives on the host (one sync per step reads the sampled tokens,
    which deciding what stopped needs anyway); columns, masks and logits stay on the model's device."""

    def __init__(
        self, engine: HFEngine, prompts: Sequence[Sequence[int]], sampling: Sampling, uniforms: torch.Tensor | None
    ) -> None:
        self.engine, self.prompts, self.sampling, self.uniforms = engine, prompts, sampling, uniforms
        self.model, self.device = engine.model, _device_of(engine.model)
        self.dtype = next(engine.model.parameters()).dtype
        # Similar lengths share a prefill group, so that left padding wastes little compute; identical
        # prompts end up side by side, so that they share a group and one prefill (_admit).
        self.waiting = deque(
            sorted(range(len(prompts)), key=lambda index: (len(prompts[index]), tuple(prompts[index])))
        )
        slots = min(engine.max_batch_size, len(prompts))
        self.width = max(len(prompt) for prompt in prompts) + sampling.max_new_tokens
        self.cache = SlotCache(self.model.config.num_hidden_layers, slots, self.width)
        self.columns = torch.arange(self.width, device=self.device)
        self.prompt_of: list[int | None] = [None] * slots  # the prompt each slot decodes, None when free
        self.start = torch.zeros(slots, dtype=torch.long, device=self.device)  # first column of the slot's prompt
        self.write = torch.zeros(slots, dtype=torch.long, device=self.device)  # column of the slot's next token
        self.logits: torch.Tensor | None = None  # (slots, vocabulary): each slot's next-token logits
        self.stop_ids = set(sampling.stop_token_ids)
        self.tokens: list[list[int]] = [[] for _ in prompts]
        self.logprobs: list[list[float]] = [[] for _ in prompts]
        self.stopped = [False] * len(prompts)
        self.live: list[int] = []  # the slots sampled last, in the order of next_token
        self.next_token: torch.Tensor | None = None

    def run(self) -> list[Generation]:
        while True:
            self._admit()
            live = [slot for slot, prompt in enumerate(self.prompt_of) if prompt is not None]
            if not live:
                break
            self._sample(live)
            running = [slot for slot in live if self.prompt_of[slot] is not None]
            if running:
                if not self.waiting and len(running) <= len(self.prompt_of) // 2:
                    self._compact(running)
                self._decode()
        return [
            Generation(token_ids=tuple(tokens), logprobs=tuple(logprobs), stopped=stopped)
            for tokens, logprobs, stopped in zip(self.tokens, self.logprobs, self.stopped)
        ]

    def _admit(self) -> None:
        """Prefill free slots with the shortest waiting prompts, as one left-padded group.

        Identical prompts in the group (a GRPO group's first turn, a recall question asked G times) are
        prefilled once and their cache rows and logits copied to the other slots: a prompt's prefill
        depends on its tokens only, and each copy still samples with its own uniforms."""
        free = [slot for slot, prompt in enumerate(self.prompt_of) if prompt is None][: len(self.waiting)]
        if not free:
            return
        slot_of_prompt: dict[tuple[int, ...], int] = {}
        filled, group, copies = [], [], []  # the slots and prompts prefilled; (source, target) slots copied
        for slot in free:
            index = self.waiting.popleft()
            source = slot_of_prompt.setdefault(tuple(self.prompts[index]), slot)
            if source == slot:
                filled.append(slot)
                group.append(index)
            else:
                copies.append((source, slot))
            self.prompt_of[slot] = index
        lengths = [len(self.prompts[index]) for index in group]
        width = max(lengths)
        input_ids = torch.full((len(group), width), self.engine.pad_token_id, dtype=torch.long)
        for row, index in enumerate(group):
            input_ids[row, width - lengths[row] :] = torch.as_tensor(self.prompts[index], dtype=torch.long)
        rows = torch.as_tensor(filled, device=self.device)
        start = width - torch.as_tensor(lengths, device=self.device)
        columns = self.columns[:width]
        # Query column q of a row sees key columns from the row's start up to q: causal, padding masked.
        # A padding query sees itself, so that no row of scores is all masked: some attention kernels
        # turn such a row into NaNs, which would reach the real tokens through the padding's values.
        keys, queries = columns[None, None, :], columns[None, :, None]
        allowed = ((keys >= start[:, None, None]) & (keys <= queries)) | (keys == queries)
        self.cache.prefill(rows)
        # Explicit positions: a padded prompt must see the positions it sees alone.
        output = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=self._mask(allowed),
            position_ids=(columns[None, :] - start[:, None]).clamp(min=0),
            past_key_values=self.cache,
            use_cache=True,
            **self.engine._logits_kwargs,
        )
        logits = output.logits[:, -1]
        if self.logits is None:
            self.logits = logits.new_empty((len(self.prompt_of), logits.shape[-1]))
        self.logits[rows] = logits
        self.start[rows], self.write[rows] = start, width
        if copies:
            sources, targets = (torch.as_tensor(slots, device=self.device) for slots in zip(*copies))
            self.cache.copy(sources, targets, width)
            self.logits[targets] = self.logits[sources]
            self.start[targets], self.write[targets] = self.start[sources], width

    def _sample(self, live: list[int]) -> None:
        """Draw each live slot's next token and free the slots whose sequence ends with it."""
        prompts = [self.prompt_of[slot] for slot in live]
        uniforms = None
        if self.uniforms is not None:
            made = torch.as_tensor([len(self.tokens[index]) for index in prompts], device=self.device)
            uniforms = self.uniforms[torch.as_tensor(prompts, device=self.device), made]
        token, logprob = choose(self.logits[torch.as_tensor(live, device=self.device)], self.sampling, uniforms)
        self.live, self.next_token = live, token
        for slot, index, value, score in zip(live, prompts, token.tolist(), logprob.tolist()):
            self.tokens[index].append(value)
            self.logprobs[index].append(score)
            if value in self.stop_ids:
                self.stopped[index] = True
            if self.stopped[index] or len(self.tokens[index]) == self.sampling.max_new_tokens:
                self.prompt_of[slot] = None

    def _compact(self, running: list[int]) -> None:
        """Drop finished slots once nothing waits for them (see SlotCache.compact)."""
        keep = torch.as_tensor(running, device=self.device)
        self.cache.compact(keep)
        self.start, self.write, self.logits = self.start[keep], self.write[keep], self.logits[keep]
        position = {slot: row for row, slot in enumerate(self.live)}
        self.next_token = self.next_token[torch.as_tensor([position[slot] for slot in running], device=self.device)]
        self.live = list(range(len(running)))
        self.prompt_of = [self.prompt_of[slot] for slot in running]

    def _decode(self) -> None:
        """One token for every slot: the live ones feed what they just sampled, free ones a pad at column 0."""
        live = torch.as_tensor([prompt is not None for prompt in self.prompt_of], device=self.device)
        input_ids = torch.full((len(self.prompt_of), 1), self.engine.pad_token_id, dtype=torch.long, device=self.device)
        input_ids[torch.as_tensor(self.live, device=self.device), 0] = self.next_token
        # A free slot's columns are garbage until its next prefill overwrites them from column 0.
        start, write = self.start.masked_fill(~live, 0), self.write.masked_fill(~live, 0)
        allowed = (self.columns[None, :] >= start[:, None]) & (self.columns[None, :] <= write[:, None])
        self.cache.decode(write)
        output = self.model(
            input_ids=input_ids,
            attention_mask=self._mask(allowed[:, None, :]),
            position_ids=(write - start)[:, None],
            past_key_values=self.cache,
            use_cache=True,
            **self.engine._logits_kwargs,
        )
        self.logits = output.logits[:, -1]
        self.write += live

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """A (rows, 1, queries, keys) mask: boolean for sdpa (a quarter of the memory of a float mask, which
        matters for long prefills), additive for attention implementations that add the mask to the scores."""
        if self.model.config._attn_implementation in attention.BOOLEAN_MASKS:
            return allowed[:, None]
        return torch.zeros(allowed.shape, dtype=self.dtype, device=self.device).masked_fill_(
            ~allowed, torch.finfo(self.dtype).min
        )[:, None]


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _same_device(left: torch.device, right: torch.device) -> bool:
    """Devices equal up to an implicit index ('cuda' means the current CUDA device)."""
    if left.type != right.type:
        return False
    if left.type == "cuda":
        current = torch.cuda.current_device()
        return (current if left.index is None else left.index) == (current if right.index is None else right.index)
    return left.index is None or right.index is None or left.index == right.index
