"""The policy's chat format: user prompts as token ids, and the tokens that end an assistant turn."""

from __future__ import annotations

from collections.abc import Sequence


def _chat_ids(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of a rendered chat; transformers 5 returns a BatchEncoding, older versions a plain list."""
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def encode_user(tokenizer, text: str) -> list[int]:
    """Token ids of one user message followed by the assistant header, ready for generation."""
    return _chat_ids(tokenizer, [{"role": "user", "content": text}], add_generation_prompt=True)


def stop_token_ids(tokenizer, extra: Sequence[int] = ()) -> tuple[int, ...]:
    """Tokens after which a reply is over: the eos token and the chat template's end-of-turn token.

    Read from the template rather than hard-coded, because GGUF exports and base configs disagree
    about eos (SmolLM2's GGUF names `<|im_start|>`, the turn really ends with `<|im_end|>`).
    """
    marker = "Zq9xMarker"
    ids = _chat_ids(tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}])
    marker_ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
    stops = set(extra)
    if tokenizer.eos_token_id is not None:
        stops.add(tokenizer.eos_token_id)
    for start in range(len(ids) - len(marker_ids), -1, -1):
        if ids[start : start + len(marker_ids)] == marker_ids:
            after = start + len(marker_ids)
            if after < len(ids) and (
                ids[after] in tokenizer.all_special_ids or ids[after] in tokenizer.added_tokens_decoder
            ):
                stops.add(ids[after])
            break
    return tuple(sorted(stops))


def decode_reply(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True).strip()
