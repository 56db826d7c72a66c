"""rStar2 chat format: prompt and environment texts, tool-call parsing, tokenizers, Trajectory.

Level 0 (no JAX). PAPER.md §2 and §3.4 layer 2; see each module for its part.
"""
from rstar_jax.chat.template import (
    DEFAULT_FORMAT, ENDOFTEXT, GENERATION_PROMPT, IM_END, IM_START, PAPER_TOOL_NAME,
    SPECIAL_TOKENS, TOOL_NAME, USER_PREFIX, VARIANTS, ChatFormat, prompt_text, render_messages,
    system_text, tool_call_text, tool_response_text, tool_schema)
from rstar_jax.chat.bpe import train_bpe_tokenizer
from rstar_jax.chat.tiktoken_bpe import (
    QWEN2_5_ADDED_TOKENS, QWEN3_ADDED_TOKENS, AddedTokenSpec, load_tiktoken_ranks,
    tiktoken_to_hf_tokenizer, write_tokenizer_dir)
from rstar_jax.chat.tokenization import (
    UNK_TEXT, UNK_TOKEN, CharTokenizer, HFTokenizer, Tokenizer, load_tokenizer)
from rstar_jax.chat.tool_calls import (
    DEFAULT_MAX_PARALLEL_CALLS, DEFAULT_MAX_TOOL_RESPONSE_CHARS, TRUNCATE_SIDES, PythonRequest,
    ToolCall, ToolCallError, execution_error_text, parse_tool_calls, python_request,
    truncate_tool_response)
from rstar_jax.chat.trajectory import Trajectory, encode_segments

__all__ = [
    "DEFAULT_FORMAT", "ENDOFTEXT", "GENERATION_PROMPT", "IM_END", "IM_START", "PAPER_TOOL_NAME",
    "SPECIAL_TOKENS", "TOOL_NAME", "USER_PREFIX", "VARIANTS", "ChatFormat", "prompt_text",
    "render_messages", "system_text", "tool_call_text", "tool_response_text", "tool_schema",
    "UNK_TEXT", "UNK_TOKEN", "CharTokenizer", "HFTokenizer", "Tokenizer", "load_tokenizer",
    "DEFAULT_MAX_PARALLEL_CALLS", "DEFAULT_MAX_TOOL_RESPONSE_CHARS", "TRUNCATE_SIDES",
    "PythonRequest", "ToolCall", "ToolCallError", "execution_error_text", "parse_tool_calls",
    "python_request", "truncate_tool_response", "Trajectory", "encode_segments", "train_bpe_tokenizer",
    "QWEN2_5_ADDED_TOKENS", "QWEN3_ADDED_TOKENS", "AddedTokenSpec", "load_tiktoken_ranks",
    "tiktoken_to_hf_tokenizer", "write_tokenizer_dir",
]
