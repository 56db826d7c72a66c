"""An SGLang-compatible HTTP server over the JAX engine (SGLANG_API.md §7: SGLang 0.5.6's shapes).

  server = GenerationServer(AsyncJaxEngine(engine), model_path=DIR, weights=WeightLoader(cfg, mesh_rules))
  web.run_app(server.app, host="127.0.0.1", port=30000)     # or `rstar-serve --checkpoint DIR`

Routes:
  POST|PUT /generate            input_ids (one list or a batch) or text (needs a tokenizer);
                                sampling_params (dict or one per item), rid, return_logprob,
                                logprob_start_len, return_text_in_logprobs, stream
                                -> {text?, output_ids, meta_info} or a list; with stream, SSE
                                events of cumulative answers (batch items carry "index"), then
                                `data: [DONE]`
  GET  /health                  503 until the warm-up generation ran, then 200
  GET  /health_generate         200 if a 1-token generation answers within 20 s, else 503
  GET  /get_model_info, /model_info, /get_server_info, /server_info, /v1/models
  GET  /get_load, /v1/loads     running and waiting requests, KV tokens in use of the capacity
  GET  /get_weight_version, /weight_version
  GET|POST /flush_cache         200 text; 400 while requests are in flight
  POST /update_weights_from_disk  {model_path, weight_version?, abort_all_requests?}: loads the
                                new weights beside decoding, then drains (or aborts) the requests in
                                flight, swaps, drops the prefix cache and sets the version
  POST /upload_weights?weight_version=V  (ours, not SGLang's) a safetensors blob of HF-named tensors,
                                staged for version V (a new V drops what an earlier one staged);
                                -> {success, weight_version, num_tensors, num_bytes} staged so far;
                                400 naming a tensor the served model has no place for or of
                                another shape, 413 beyond MAX_UPLOAD_BYTES
  POST /update_weights_from_upload  {weight_version, abort_all_requests?} (ours): swaps in the
                                tensors staged for weight_version as /update_weights_from_disk does
                                (400 naming what is missing; either way the staged tensors are
                                used up, freed as the parameters are built; asked again for the
                                version it serves: 200); the trainer pushes its
                                policy this way without a filesystem the server shares
                                (`rollout.weight_sync.push_version`)
  POST /pause_generation {mode: abort | in_place}, /continue_generation, /abort_request {rid, abort_all}
Not served (400 "not supported"): /update_weights_from_tensor, /update_weights_from_distributed
(they need torch on the trainer's side); top log-probs; penalties, min_new_tokens and constrained
decoding at values other than their defaults. `skip_special_tokens` is accepted; `text` always
writes special tokens out.

Stop strings (`sampling_params.stop`, needs a tokenizer) end a request once the decoded output
holds one: `output_ids` ends with the token that completed it, `text` is cut before it (after it
with `no_stop_trim`), finish_reason {"type": "stop", "matched": the string}. A stop id or string
on the last allowed token finishes as "stop" (SGLang 0.5 checks the length first and says
"length"): the output is complete. While streaming, `text` holds back a trailing character whose
bytes are not all out yet, as SGLang's detokenizer does.
Input log-probs (`return_logprob` with `logprob_start_len` >= 0): `input_token_logprobs` holds the
prompt's tokens from that position on, the first with a null log-prob (as SGLang), each other
log softmax(z / temperature) of the model's logits at the position before it (temperature 1 when
greedy, as the output log-probs), computed by a separate forward pass over the prompt
(`prompt_logprobs`: attention and logits in chunks of PROMPT_CHUNK positions, only the picked
log-probs leave the device; one pass at a time, once per distinct prompt of a request) with the
weights the request then generates with (a weight update during the pass redoes it). With -1 (the
default) the list is the last prompt token with a null log-prob.
Streaming: one event per engine step that sampled tokens (events a slow reader missed are merged:
the last answer so far is sent; each decodes only its new tokens, `_Rendering`), the final answer,
then `data: [DONE]`; an error after the stream
started is sent as `data: {"error": {"message": ...}}` before `[DONE]`; a client that goes away
has its requests aborted.

Errors are SGLang's: 400 `{"error": {"message": ...}}` naming the field, for bad JSON the
`{"object": "error", ...}` shape, 503 when more than `max_queued_requests` wait, 413 for a body
over its route's limit; a handler never
takes the server down. With `api_key`, every route but /health needs `Authorization: Bearer KEY`.
KV load: the engine's cache has num_slots x max_length positions (`max_total_num_tokens`);
`num_used_tokens` counts the positions the running requests have written, as SGLang counts its
token pool, and `max_running_requests` is num_slots.
"""
import asyncio
import dataclasses
import functools
import hmac
import json
import time
import uuid
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from aiohttp import web

from rstar_jax import models
from rstar_jax.chat import tokenization
from rstar_jax.rollout import jax_engine
from rstar_jax.rollout import sampling as sampling_lib

VERSION = "rstar-jax-0.1"
HEALTH_TIMEOUT_S = 20.0
MAX_UPLOAD_BYTES = 4 << 30  # one /upload_weights body (Qwen3-14B's largest tensor is 1.6 GB in bf16)
_OPEN_ROUTES = ("/health",)
class RequestError(ValueError):
  """A request the server refuses: HTTP `status` with SGLang's error body."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def _json(body: Any, status: int = 200) -> web.Response:
  return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=status,
                      content_type="application/json")


def _error(message: str, status: int) -> web.Response:
  if status == 400:
    return _json({"error": {"message": message}}, 400)
  return _json({"object": "error", "message": message, "type": str(status), "param": None, "code": status},
               status)


def _update_fields(body: dict, version_required: bool) -> tuple[str | None, bool]:
  """(weight_version, abort_all_requests) of a weight-update body, checked."""
  version, abort_all = body.get("weight_version"), body.get("abort_all_requests", False)
  if version_required and not (isinstance(version, str) and version):
    raise RequestError(f"weight_version must be a non-empty string, got {version!r}")
  if version is not None and not isinstance(version, str):
    raise RequestError(f"weight_version must be a string, got {version!r}")
  if not isinstance(abort_all, bool):
    raise RequestError(f"abort_all_requests must be a boolean, got {abort_all!r}")
  return version, abort_all


async def _read_limited(request: web.Request, limit: int) -> bytearray:
  """The body, refused with 413 beyond `limit` bytes (the app's client_max_size is for JSON bodies)."""
  expected = request.content_length
  if expected is not None and expected > limit:
    raise RequestError(f"the body has {expected} bytes, more than {limit}: send smaller chunks", 413)
  body, size = bytearray(expected or 0), 0  # filled in place when the length is known: one copy of the body
  cap = limit if expected is None else expected
  async for chunk in request.content.iter_chunked(1 << 20):
    if size + len(chunk) > cap:
      raise RequestError(f"the body has more than {cap} bytes", 413)
    if expected is None:
      body += chunk
    else:
      body[size:size + len(chunk)] = chunk
    size += len(chunk)
  if expected is not None and size != expected:
    raise RequestError(f"the body ended after {size} of its {expected} bytes")
  return body


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


# sampling_params the engine honours (with their JSON type), those accepted only at SGLang's
# defaults, and those without effect here.
_SAMPLING_TYPES = {"max_new_tokens": _is_int, "temperature": _is_number, "top_p": _is_number, "top_k": _is_int,
                   "min_p": _is_number, "ignore_eos": lambda v: isinstance(v, bool), "sampling_seed": _is_int,
                   "stop_token_ids": lambda v: isinstance(v, list) and all(_is_int(t) for t in v)}
_NULLABLE = ("max_new_tokens", "sampling_seed", "stop_token_ids")
_DEFAULT_ONLY = {"frequency_penalty": 0.0, "presence_penalty": 0.0, "repetition_penalty": 1.0,
                 "min_new_tokens": 0, "stop_regex": None, "json_schema": None, "regex": None,
                 "ebnf": None, "structural_tag": None, "logit_bias": None, "custom_params": None}
_IGNORED = ("n", "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim", "stream_interval")
_SERVER_SIDE = ("stop",)  # read by the server (`stop_strings`), not the engine


def sampling_from_json(params: Any) -> tuple[sampling_lib.SamplingParams, int]:
  """(SamplingParams, n) from SGLang's `sampling_params` dict; RequestError naming a bad field."""
  if not isinstance(params, dict):
    raise RequestError(f"sampling_params must be an object, got {type(params).__name__}")
  kwargs = {}
  for key, value in params.items():
    if key in _SAMPLING_TYPES:
      if value is None and key in _NULLABLE:
        continue
      if not _SAMPLING_TYPES[key](value):
        raise RequestError(f"sampling_params.{key} has the wrong type: {value!r}")
      kwargs[key] = tuple(value) if key == "stop_token_ids" else value
    elif key in _DEFAULT_ONLY:
      if value not in (_DEFAULT_ONLY[key], None) and value != []:
        raise RequestError(f"sampling_params.{key}={value!r} is not supported by this server "
                           f"(only {_DEFAULT_ONLY[key]!r})")
    elif key not in _IGNORED + _SERVER_SIDE:
      raise RequestError(f"unknown field sampling_params.{key}")
  n = params.get("n", 1)
  if not _is_int(n) or n < 1:
    raise RequestError(f"sampling_params.n must be an int >= 1, got {n!r}")
  try:
    return sampling_lib.SamplingParams(**kwargs), n
  except ValueError as e:
    raise RequestError(str(e)) from None


def stop_strings(params: dict) -> tuple[str, ...]:
  """`sampling_params.stop` (a string or a list of them; null or [] for none) as a tuple;
  RequestError for another type or an empty string."""
  stop = params.get("stop")
  stops = () if stop is None else (stop,) if isinstance(stop, str) else stop
  if not isinstance(stops, (list, tuple)) or not all(isinstance(x, str) and x for x in stops):
    raise RequestError(f"sampling_params.stop must be a non-empty string or a list of them, got {stop!r}")
  return tuple(stops)


class StopStringCheck:
  """`GenerateRequest.stop_check` for stop strings: the first of `stops` found in the decoded
  tail of the outputs, else None.

  Called after every token, it decodes only the last (longest stop in UTF-8 bytes + 4) ids: a
  match new at this token ends inside its text, so starts at most that many bytes earlier, every
  id decodes to at least one byte, and 3 spare ids absorb a tail that starts inside a character."""

  def __init__(self, tokenizer: tokenization.Tokenizer, stops: tuple[str, ...]):
    self._tokenizer, self._stops = tokenizer, stops
    self._tail = max(len(stop.encode()) for stop in stops) + 4

  def __call__(self, output_ids: list[int]) -> str | None:
    text = self._tokenizer.decode(output_ids[-self._tail:])
    return next((stop for stop in self._stops if stop in text), None)


def served_eos_ids(config_eos: Sequence[int], tokenizer: tokenization.Tokenizer | None) -> tuple[int, ...]:
  """The ids `rstar-serve` ends a turn at: the checkpoint config's eos_token_id, else the
  tokenizer's EOS, else none."""
  return tuple(config_eos) or ((tokenizer.eos_id,) if tokenizer is not None else ())


class WeightLoader:
  """New parameters for the served architecture `cfg`, in its dtypes and the engine's shardings,
  split by layer as the engine holds them (so the split runs in the loading thread too), from a
  Hugging Face directory or from uploaded HF-named tensors; ValueError naming what differs."""

  def __init__(self, cfg: models.ModelConfig, mesh_rules: models.MeshRules | None):
    self._cfg, self._mesh_rules = cfg, mesh_rules
    self._expected = models.hf_tensor_shapes(cfg)

  def from_disk(self, path: str):
    cfg = self._cfg
    try:
      loaded, params = models.load_hf(path, dtype=cfg.param_dtype, compute_dtype=cfg.dtype,
                                      mesh_rules=self._mesh_rules, remat=cfg.remat)
    except (OSError, ValueError, KeyError) as e:
      raise ValueError(f"cannot load weights from {path!r}: {e}") from None
    fields = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
              "num_kv_heads", "head_dim", "tie_word_embeddings", "qkv_bias", "o_bias", "qk_norm")
    differ = [f"{f}: {getattr(loaded, f)} (served {getattr(cfg, f)})" for f in fields
              if getattr(loaded, f) != getattr(cfg, f)]
    if differ:
      raise ValueError(f"the weights at {path!r} are another architecture: {', '.join(differ)}")
    return models.split_layers(params, consume=True)

  def check_upload(self, tensors: dict[str, np.ndarray]) -> None:
    """RequestError naming an uploaded tensor the served architecture has no place for, or whose
    shape differs (so a wrong push is refused at its first chunk, and an upload holds at most one
    model's tensors)."""
    for name, tensor in tensors.items():
      want = self._expected.get(name)
      if want is None:
        raise RequestError(f"tensor {name!r} is not a tensor of the served {self._cfg.model_type} model")
      if tuple(tensor.shape) != want:
        raise RequestError(f"tensor {name!r} has shape {list(tensor.shape)}, the served model's is {list(want)}")

  def from_tensors(self, tensors: dict[str, np.ndarray], label: str):
    return models.split_layers(models.params_from_hf_tensors(self._cfg, tensors, self._mesh_rules, label),
                               consume=True)


@dataclasses.dataclass
class _Upload:
  """Tensors uploaded for one weight version, not yet swapped in."""
  version: str | None = None
  tensors: dict = dataclasses.field(default_factory=dict)

  @property
  def num_bytes(self) -> int:
    return sum(t.nbytes for t in self.tensors.values())


@dataclasses.dataclass(frozen=True)
class _Item:
  """One generation of a /generate call: its engine request, stop strings, whether `text` keeps
  a matched stop, and logprob_start_len."""
  request: jax_engine.GenerateRequest
  stops: tuple[str, ...]
  no_stop_trim: bool
  logprob_start: int


class _Rendering:
  """What an item's answers repeat from one stream event to the next, kept so that an event costs
  what its new tokens cost, not the whole output: the text so far, decoded incrementally with
  SGLang's detokenizer offsets (the ids since the last complete character, after the segment
  before them as context; a trailing character whose bytes are not all out yet held back), the
  text of each output token (with return_text_in_logprobs) and the input log-prob entries."""

  def __init__(self, tokenizer: tokenization.Tokenizer | None, with_token_text: bool, item: _Item,
               return_logprob: bool, input_logprobs: list | None):
    """input_logprobs: the prompt's log-probs after logprob_start_len (None with -1: only the last
    prompt token, with a null log-prob, is listed)."""
    self._tokenizer, self._with_token_text = tokenizer, with_token_text
    self._context = self._read = 0  # ids[_context:_read]: the last committed segment
    self._text = ""
    self._token_texts: list[str | None] = []
    self.input_entries = None
    if return_logprob:
      prompt = [int(t) for t in item.request.input_ids]
      start = len(prompt) - 1 if item.logprob_start == -1 else item.logprob_start
      values = [None] + (input_logprobs or [])
      self.input_entries = [[lp, t, self._token_text(t)] for lp, t in zip(values, prompt[start:])]

  def _token_text(self, token: int) -> str | None:
    return self._tokenizer.decode([token]) if self._with_token_text else None

  def running_text(self, output_ids: list[int]) -> str:
    """The text of `output_ids` (which extend the ids of every earlier call), its incomplete last
    character held back."""
    if len(output_ids) == self._read:
      return self._text
    before = self._tokenizer.decode(output_ids[self._context:self._read])
    after = self._tokenizer.decode(output_ids[self._context:])
    new = after[len(before):]
    if new.endswith("\ufffd"):  # not committed: the next call decodes these ids again
      return self._text + new.rstrip("\ufffd")
    self._text += new
    self._context, self._read = self._read, len(output_ids)
    return self._text

  def token_texts(self, output_ids: list[int]) -> list[str | None]:
    self._token_texts += [self._token_text(t) for t in output_ids[len(self._token_texts):]]
    return self._token_texts[:len(output_ids)]


PROMPT_CHUNK = 512  # positions per attention and logits chunk of the input log-prob pass


@functools.partial(jax.jit, static_argnames=("cfg", "mesh_rules"))
def _prompt_logprobs(cfg: models.ModelConfig, params, ids, temperature, mesh_rules):
  targets = jnp.concatenate([ids[:, 1:], ids[:, :1]], axis=1)  # position s predicts ids[s + 1]; the last is unused
  chunk = PROMPT_CHUNK if ids.shape[1] > PROMPT_CHUNK else 0
  return models.token_logprobs(cfg.replace(attention_chunk=chunk), params, ids, targets, None, None, mesh_rules,
                               logits_chunk=chunk, temperature=temperature)[0]


def prompt_logprobs(cfg: models.ModelConfig, params, prompt: list[int], temperature: float,
                    mesh_rules=None) -> np.ndarray:
  """log softmax(z_s / temperature)[prompt[s + 1]] fp32 [P - 1] for s = 0 .. P - 2: the prompt
  right-padded (causal, so its logits are unchanged) to `jax_engine.length_bucket`, and past
  PROMPT_CHUNK positions to a multiple of it, so few lengths compile."""
  size = jax_engine.length_bucket(len(prompt))
  if size > PROMPT_CHUNK:
    size = -(-size // PROMPT_CHUNK) * PROMPT_CHUNK
  padded = np.zeros((1, size), np.int32)
  padded[0, :len(prompt)] = prompt
  values = _prompt_logprobs(cfg, params, padded, jnp.float32(temperature), mesh_rules)
  return np.asarray(values)[:len(prompt) - 1]


class GenerationServer:
  """The aiohttp application over one `AsyncJaxEngine` (module docstring)."""

  def __init__(self, engine: jax_engine.AsyncJaxEngine, *, model_path: str,
               weights: WeightLoader, tokenizer: tokenization.Tokenizer | None = None,
               weight_version: str = "default", api_key: str | None = None, max_queued_requests: int = 1024):
    if api_key is not None and not api_key.strip():
      raise ValueError("api_key must be a non-empty string (or None for no key)")
    self.engine = engine
    self.model_path = model_path
    self.weight_version = weight_version
    self._weights = weights
    self._upload = _Upload()
    self._tokenizer = tokenizer
    self._authorization = None if api_key is None else f"Bearer {api_key.strip()}".encode()
    self._max_queued = max_queued_requests
    self._ready = False
    self._accepting = asyncio.Event()  # cleared while a weight update drains the engine
    self._accepting.set()
    self._weights_lock = asyncio.Lock()
    self._held = 0  # requests waiting for a weight update to end
    self._prompt_pass = asyncio.Lock()  # one input log-prob pass at a time
    self.app = web.Application(client_max_size=256 << 20, middlewares=[self._middleware])
    self.app.on_startup.append(self._warm_up)
    routes = self.app.router
    routes.add_post("/generate", self._generate)
    routes.add_put("/generate", self._generate)
    routes.add_get("/health", self._health)
    routes.add_get("/health_generate", self._health_generate)
    for path in ("/get_model_info", "/model_info"):
      routes.add_get(path, self._model_info)
    for path in ("/get_server_info", "/server_info"):
      routes.add_get(path, self._server_info)
    routes.add_get("/v1/models", self._models)
    routes.add_get("/get_load", self._get_load)
    routes.add_get("/v1/loads", self._v1_loads)
    for path in ("/get_weight_version", "/weight_version"):
      routes.add_get(path, self._weight_version)
    routes.add_route("*", "/flush_cache", self._flush_cache)
    routes.add_post("/update_weights_from_disk", self._update_weights)
    routes.add_post("/upload_weights", self._upload_weights)
    routes.add_post("/update_weights_from_upload", self._update_weights_from_upload)
    routes.add_post("/pause_generation", self._pause)
    routes.add_post("/continue_generation", self._continue)
    routes.add_post("/abort_request", self._abort_request)
    for path in ("/update_weights_from_tensor", "/update_weights_from_distributed", "/init_weights_update_group"):
      routes.add_post(path, self._not_supported)

  @property
  def max_length(self) -> int:
    return self.engine.engine.max_length

  @web.middleware
  async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
    if self._authorization is not None and request.path not in _OPEN_ROUTES and not hmac.compare_digest(
        request.headers.get("Authorization", "").encode(), self._authorization):
      return _json({"error": {"message": "missing or invalid API key (send Authorization: Bearer KEY)"}}, 401)
    try:
      return await handler(request)
    except RequestError as e:
      return _error(str(e), e.status)
    except web.HTTPException as e:  # 404, 405, 413 from aiohttp
      return _error(e.reason, e.status)

  async def _warm_up(self, _app) -> None:
    """Compiles a prefill and a decode step before /health answers 200."""
    await self.engine.generate(jax_engine.GenerateRequest(
        f"warmup-{uuid.uuid4().hex}", [0, 0], sampling_lib.SamplingParams(max_new_tokens=2, temperature=0.0)))
    self._ready = True

  @staticmethod
  async def _body(request: web.Request, required: bool = True) -> dict:
    raw = await request.read()
    if not raw.strip() and not required:
      return {}
    try:
      body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise RequestError(f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
      raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
    return body

  # -- generation --------------------------------------------------------------------------------

  def _prompts(self, body: dict) -> tuple[list[list[int]], bool]:
    """(prompts as id lists, whether the request is a batch)."""
    if body.get("input_ids") is not None:
      ids = body["input_ids"]
      batch = isinstance(ids, list) and bool(ids) and all(isinstance(x, list) for x in ids)
      prompts = ids if batch else [ids]
      for i, prompt in enumerate(prompts):
        where = f"input_ids[{i}]" if batch else "input_ids"
        if not isinstance(prompt, list) or not all(_is_int(t) for t in prompt):
          raise RequestError(f"{where} must be a list of ints (or a list of such lists)")
        if not prompt:
          raise RequestError("input_ids cannot be empty.")
        vocab = self.engine.engine.cfg.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
          raise RequestError(f"{where} holds ids outside the vocabulary [0, {vocab}): min {min(prompt)}, "
                             f"max {max(prompt)}")
      return prompts, batch
    if body.get("text") is not None:
      if self._tokenizer is None:
        raise RequestError("text input needs a tokenizer; this server has none (its checkpoint holds no "
                           "tokenizer.json): send input_ids")
      text = body["text"]
      batch = isinstance(text, list)
      texts = text if batch else [text]
      if not all(isinstance(t, str) for t in texts):
        raise RequestError("text must be a string or a list of strings")
      return [self._tokenizer.encode(t) for t in texts], batch
    raise RequestError("Either text, input_ids or input_embeds should be provided.")

  def _requests(self, body: dict) -> tuple[list["_Item"], bool]:
    """(one item per generation, whether the answer is a list)."""
    prompts, batch = self._prompts(body)
    params = body.get("sampling_params") or {}
    params = params if isinstance(params, list) else [params] * len(prompts)
    if len(params) != len(prompts):
      raise RequestError(f"sampling_params has {len(params)} entries for {len(prompts)} prompts")
    rid = body.get("rid")
    if rid is None:
      rids = [uuid.uuid4().hex for _ in prompts]
    elif isinstance(rid, str):
      rids = [f"{rid}_{i}" for i in range(len(prompts))] if batch else [rid]
    elif isinstance(rid, list) and len(rid) == len(prompts) and all(isinstance(r, str) for r in rid):
      rids = rid
    else:
      raise RequestError("rid must be a string or a list of strings, one per prompt")
    if len(set(rids)) != len(rids):
      raise RequestError("rid holds the same id twice")
    for key in ("stream", "return_logprob", "return_text_in_logprobs"):
      if not isinstance(body.get(key, False), bool):
        raise RequestError(f"{key} must be a boolean, got {body[key]!r}")
    start = body.get("logprob_start_len", -1)
    if start is None:
      start = -1
    if not _is_int(start) or start < -1:
      raise RequestError(f"logprob_start_len must be an int >= -1, got {start!r}")
    if body.get("top_logprobs_num", 0) or body.get("token_ids_logprob"):
      raise RequestError("top_logprobs_num and token_ids_logprob are not supported by this server")
    items = []
    for prompt, rid, item in zip(prompts, rids, params):
      sampling, n = sampling_from_json(item)
      if len(prompt) >= self.max_length:
        raise RequestError(f"The input ({len(prompt)} tokens) is longer than the model's context length "
                           f"({self.max_length} tokens).")
      if start >= len(prompt):
        raise RequestError(f"logprob_start_len ({start}) is not below the number of input tokens ({len(prompt)})")
      stops = stop_strings(item)
      if stops and self._tokenizer is None:
        raise RequestError("sampling_params.stop needs a tokenizer; this server has none (its checkpoint holds "
                           "no tokenizer.json): use stop_token_ids")
      check = StopStringCheck(self._tokenizer, stops) if stops else None
      names = [rid] if n == 1 else [uuid.uuid4().hex for _ in range(n)]
      items += [_Item(jax_engine.GenerateRequest(name, prompt, sampling, check), stops,
                      bool(item.get("no_stop_trim", False)), start) for name in names]
      batch = batch or n > 1
    return items, batch

  def _rendering(self, item: "_Item", body: dict, input_logprobs: list | None) -> "_Rendering":
    with_text = bool(body.get("return_text_in_logprobs")) and self._tokenizer is not None
    return _Rendering(self._tokenizer, with_text, item, bool(body.get("return_logprob")), input_logprobs)

  def _text(self, item: "_Item", output_ids: list[int], finish_reason: dict | None) -> str:
    """The decoded output, a matched stop id or string cut off (SGLang; kept with no_stop_trim)."""
    stopped = finish_reason is not None and finish_reason.get("type") == "stop" and output_ids
    if not stopped or item.no_stop_trim:
      return self._tokenizer.decode(output_ids)
    if finish_reason["matched"] in item.stops:
      text = self._tokenizer.decode(output_ids)
      return text[:text.find(finish_reason["matched"])]
    return self._tokenizer.decode(output_ids[:-1])

  def _answer(self, result: jax_engine.GenerateResult, item: "_Item", version: str, started: float,
              body: dict, rendering: "_Rendering") -> dict:
    """SGLang's answer for one result (or a snapshot of a running one, finish_reason None)."""
    output_ids = [int(t) for t in result.output_ids]
    meta = {"id": result.rid, "finish_reason": result.finish_reason, "prompt_tokens": result.prompt_tokens,
            "completion_tokens": len(output_ids), "cached_tokens": result.cached_tokens,
            "weight_version": version, "e2e_latency": time.monotonic() - started}
    answer = {"output_ids": output_ids, "meta_info": meta}
    if self._tokenizer is not None:
      answer["text"] = (rendering.running_text(output_ids) if result.finish_reason is None
                        else self._text(item, output_ids, result.finish_reason))
    if body.get("return_logprob"):
      meta["output_token_logprobs"] = [[float(lp), t, text] for lp, t, text in
                                       zip(result.output_logprobs, output_ids, rendering.token_texts(output_ids))]
      meta["input_token_logprobs"] = rendering.input_entries
    return answer

  async def _input_logprobs(self, items: list["_Item"], body: dict) -> tuple[str, list[list | None]]:
    """Admits the items (`_admitted`) and returns their weight version and, per item, the
    log-probs of its prompt tokens after logprob_start_len (module docstring) or None when not
    asked for; a weight update while they were computed makes them be computed again."""
    wanted = body.get("return_logprob") and body.get("logprob_start_len", -1) not in (-1, None)
    keys = [(tuple(item.request.input_ids), 1.0 if item.request.sampling.is_greedy else item.request.sampling.temperature)
            for item in items]
    while True:
      version = await self._admitted(items)
      if not wanted:
        return version, [None] * len(items)
      engine = self.engine.engine
      params = engine.params
      computed: dict[tuple, np.ndarray] = {}
      async with self._prompt_pass:
        for prompt, temperature in dict.fromkeys(keys):
          computed[prompt, temperature] = await asyncio.to_thread(
              prompt_logprobs, engine.cfg, params, list(prompt), temperature, engine.mesh_rules)
      if engine.params is params and self._accepting.is_set():
        return version, [[float(x) for x in computed[key][item.logprob_start:]] for key, item in zip(keys, items)]

  async def _admitted(self, items: list["_Item"]) -> str:
    """Waits while a weight update drains the engine; 503 when the server is full. Returns the
    weight version the items start with."""
    if self.engine.in_flight + self._held + len(items) > self._max_queued + self.engine.engine.num_slots:
      raise RequestError(f"the server is full: {self.engine.in_flight + self._held} requests in flight", 503)
    self._held += len(items)
    try:
      await self._accepting.wait()
    finally:
      self._held -= len(items)
    return self.weight_version

  def _versions(self, version: str) -> str:
    """`version`, or 'old,new' when the weights were updated in place while the request was paused."""
    return version if version == self.weight_version else f"{version},{self.weight_version}"

  async def _generate(self, request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    body = await self._body(request)
    items, batch = self._requests(body)
    version, input_logprobs = await self._input_logprobs(items, body)
    if body.get("stream"):
      return await self._stream(request, items, batch, body, version, started, input_logprobs)
    tasks = [asyncio.ensure_future(self.engine.generate(item.request)) for item in items]
    try:
      results = await asyncio.gather(*tasks)
    except ValueError as e:  # a rid already in flight: the batch's other items are stopped too
      for task in tasks:
        task.cancel()
      raise RequestError(str(e)) from None
    version = self._versions(version)
    answers = [self._answer(result, item, version, started, body, self._rendering(item, body, logprobs))
               for result, item, logprobs in zip(results, items, input_logprobs)]
    return _json(answers if batch else answers[0])

  async def _stream(self, request: web.Request, items: list["_Item"], batch: bool, body: dict, version: str,
                    started: float, input_logprobs: list) -> web.StreamResponse:
    """SSE: the newest answer of each item whenever it changed, then `data: [DONE]`."""
    newest: dict[int, jax_engine.GenerateResult] = {}  # not yet sent
    changed = asyncio.Event()

    def update(index: int, result: jax_engine.GenerateResult) -> None:
      newest[index] = result
      changed.set()

    async def run(index: int, item: _Item) -> None:
      try:
        update(index, await self.engine.generate(item.request, functools.partial(update, index)))
      finally:
        changed.set()

    tasks = [asyncio.create_task(run(i, item)) for i, item in enumerate(items)]
    renderings = [self._rendering(item, body, logprobs) for item, logprobs in zip(items, input_logprobs)]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    try:
      await response.prepare(request)
      while True:
        await changed.wait()
        changed.clear()
        sent = dict(newest)
        newest.clear()
        for index in sorted(sent):
          answer = self._answer(sent[index], items[index], self._versions(version), started, body,
                                renderings[index])
          if batch:
            answer["index"] = index
          await response.write(b"data: " + json.dumps(answer, separators=(",", ":")).encode() + b"\n\n")
        if all(task.done() for task in tasks) and not newest:
          break
      failed = next((task.exception() for task in tasks if not task.cancelled() and task.exception()), None)
      if failed is not None:
        await response.write(b"data: " + json.dumps({"error": {"message": str(failed)}}).encode() + b"\n\n")
      await response.write(b"data: [DONE]\n\n")
      await response.write_eof()
    except ConnectionResetError:  # the client went away
      pass
    finally:  # ended early (the client went away, the handler was cancelled): stop its requests
      for task in tasks:
        task.cancel()
    return response

  # -- health and information ----------------------------------------------------------------------

  async def _health(self, _request) -> web.Response:
    return web.Response(status=200 if self._ready else 503)

  async def _health_generate(self, _request) -> web.Response:
    probe = jax_engine.GenerateRequest(f"health-{uuid.uuid4().hex}", [0],
                                       sampling_lib.SamplingParams(max_new_tokens=1, temperature=0.0))
    try:
      await asyncio.wait_for(self.engine.generate(probe), HEALTH_TIMEOUT_S)
    except (asyncio.TimeoutError, RuntimeError):
      return web.Response(status=503)
    return web.Response(status=200)

  async def _model_info(self, _request) -> web.Response:
    return _json({"model_path": self.model_path, "tokenizer_path": self.model_path if self._tokenizer else None,
                  "is_generation": True, "preferred_sampling_params": None, "weight_version": self.weight_version,
                  "model_type": self.engine.engine.cfg.model_type})

  def _capacity(self) -> int:
    return self.engine.engine.num_slots * self.max_length

  async def _server_info(self, _request) -> web.Response:
    engine = self.engine.engine
    return _json({"model_path": self.model_path, "tp_size": 1, "dp_size": 1, "context_length": self.max_length,
                  "max_total_num_tokens": self._capacity(), "max_req_input_len": self.max_length - 1,
                  "max_running_requests": engine.num_slots, "max_queued_requests": self._max_queued,
                  "skip_tokenizer_init": self._tokenizer is None, "weight_version": self.weight_version,
                  "status": "ready" if self._ready else "starting", "version": VERSION,
                  "internal_states": [{"engine_paused": self.engine.paused, "prefill_chunk": engine.prefill_chunk}]})

  async def _models(self, _request) -> web.Response:
    return _json({"object": "list", "data": [{"id": self.model_path, "object": "model", "owned_by": "rstar-jax",
                                              "max_model_len": self.max_length}]})

  def _load_numbers(self) -> dict:
    load = self.engine.last_load
    unsubmitted = self.engine.in_flight - load.running - load.waiting
    return {"running": load.running, "waiting": load.waiting + max(unsubmitted, 0),
            "used": load.used_tokens, "waiting_tokens": load.waiting_tokens}

  async def _get_load(self, _request) -> web.Response:
    n = self._load_numbers()
    return _json([{"dp_rank": 0, "num_reqs": n["running"] + n["waiting"], "num_waiting_reqs": n["waiting"],
                   "num_tokens": n["used"] + n["waiting_tokens"]}])

  async def _v1_loads(self, _request) -> web.Response:
    n, capacity = self._load_numbers(), self._capacity()
    return _json({"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "version": VERSION,
                  "loads": [{"dp_rank": 0, "num_running_reqs": n["running"], "num_waiting_reqs": n["waiting"],
                             "num_used_tokens": n["used"], "num_total_tokens": n["used"] + n["waiting_tokens"],
                             "max_total_num_tokens": capacity,
                             "max_running_requests": self.engine.engine.num_slots,
                             "token_usage": n["used"] / capacity}]})

  async def _weight_version(self, _request) -> web.Response:
    return _json({"weight_version": self.weight_version})

  # -- control -------------------------------------------------------------------------------------

  async def _flush_cache(self, _request) -> web.Response:
    if self.engine.in_flight:
      return web.Response(status=400, text="Cache not flushed: requests are in flight.\n")
    await self.engine.flush_cache()
    return web.Response(text="Cache flushed.\n")

  async def _update_weights(self, request: web.Request) -> web.Response:
    body = await self._body(request)
    path = body.get("model_path")
    if not isinstance(path, str) or not path:
      raise RequestError("model_path must be a non-empty string")
    version, abort_all = _update_fields(body, version_required=False)
    response = await self._replace_weights(functools.partial(self._weights.from_disk, path), version, abort_all)
    if response.status == 200:
      self._upload = _Upload()  # tensors a failed push left are no use now
    return response

  async def _upload_weights(self, request: web.Request) -> web.Response:
    version = request.query.get("weight_version", "")
    if not version:
      raise RequestError("weight_version (a query parameter) must name the version the tensors belong to")
    blob = await _read_limited(request, MAX_UPLOAD_BYTES)
    try:
      tensors = await asyncio.to_thread(models.read_safetensors_bytes, blob)
    except ValueError as e:
      raise RequestError(f"the body is not a safetensors blob: {e}") from None
    self._weights.check_upload(tensors)
    if version != self._upload.version:  # a new version: what an earlier one left is dropped
      self._upload = _Upload(version)
    self._upload.tensors.update(tensors)
    return _json({"success": True, "weight_version": version, "num_tensors": len(self._upload.tensors),
                  "num_bytes": self._upload.num_bytes})

  async def _update_weights_from_upload(self, request: web.Request) -> web.Response:
    version, abort_all = _update_fields(await self._body(request), version_required=True)
    if version != self._upload.version:
      async with self._weights_lock:  # a swap to it in progress (a resent request's first) ends first
        if version == self.weight_version:
          return _json({"success": True, "message": f"Already serving weight_version {version!r}.",
                        "num_paused_requests": 0})
      return _json({"success": False, "num_paused_requests": 0, "message": f"no tensors uploaded for "
                    f"weight_version {version!r} (uploaded: {self._upload.version!r})"}, 400)
    upload, self._upload = self._upload, _Upload()  # consumed as the parameters are built
    load = functools.partial(self._weights.from_tensors, upload.tensors, f"the upload of {version!r} (dropped)")
    # shielded: a client that hangs up does not stop a swap that has used the upload up
    return await asyncio.shield(self._replace_weights(load, version, abort_all))

  async def _replace_weights(self, load: Callable[[], Any], version: str | None, abort_all: bool) -> web.Response:
    """Builds the new parameters beside decoding, then drains (or aborts) the requests in flight,
    swaps, drops the prefix cache and sets the version; 400 with the loader's message."""
    async with self._weights_lock:
      try:
        params = await asyncio.to_thread(load)
      except ValueError as e:
        return _json({"success": False, "message": str(e), "num_paused_requests": 0}, 400)
      self._accepting.clear()
      try:
        paused = self.engine.in_flight if self.engine.paused else 0
        if abort_all:
          await self.engine.abort()
        elif not self.engine.paused:
          await self.engine.wait_idle()
        await self.engine.set_params(params)
        if version is not None:
          self.weight_version = version
      finally:
        self._accepting.set()
    return _json({"success": True, "message": "Succeeded to update model weights.",
                  "num_paused_requests": paused})

  async def _pause(self, request: web.Request) -> web.Response:
    mode = (await self._body(request, required=False)).get("mode", "abort")
    if mode not in ("abort", "in_place"):
      raise RequestError(f"mode must be 'abort' or 'in_place' ('retract' is not supported), got {mode!r}")
    self.engine.pause()
    if mode == "abort":
      await self.engine.abort()
    return _json({"message": "Generation paused successfully.", "status": "ok"})

  async def _continue(self, _request) -> web.Response:
    self.engine.resume()
    return _json({"message": "Generation continued successfully.", "status": "ok"})

  async def _abort_request(self, request: web.Request) -> web.Response:
    body = await self._body(request)
    rid, abort_all = body.get("rid", ""), body.get("abort_all", False)
    if not isinstance(rid, str) or not isinstance(abort_all, bool):
      raise RequestError("rid must be a string and abort_all a boolean")
    if abort_all or rid:
      await self.engine.abort("" if abort_all else rid)
    return web.Response(status=200)

  async def _not_supported(self, _request) -> web.Response:
    return _json({"success": False, "message": "not supported: write safetensors and call "
                                               "/update_weights_from_disk, or push them to /upload_weights"}, 400)
