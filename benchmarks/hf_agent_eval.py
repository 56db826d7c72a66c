"""An independent check of a run's evaluation: the saved policies rolled out by Hugging Face
transformers (greedy or sampled `generate`) with a plain Python subprocess as the tool, scored by
math-verify, with none of our engine, agent loop, sandbox or reward code.

It re-implements the protocol from its specification (PAPER.md §2.2-§2.5, §3.3): the prompt text
comes from the policy's chat format, each turn ends at `<|im_end|>`, the first `<tool_call>` JSON
block of a turn is run as `python -c CODE` (stdin from its "input"), and its output goes back as
`<|im_start|>user\\n<tool_response>\\n...\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n<reason>`
in the Code Judge text format; the answer is the last `\\boxed{}`, checked by math-verify.

  python benchmarks/hf_agent_eval.py --run runs/tiny --phases sft stage3 --num_problems 100
prints a table of accuracy per phase (and the gain), e.g. to confirm that RL's gain holds outside
our implementation.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import torch
import transformers
from tokenizers import Tokenizer
from math_verify import parse, verify

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from rstar_jax import chat  # pylint: disable=wrong-import-position  (the prompt text only)

_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def run_python(code: str, stdin: str, timeout_s: float = 4.0) -> str:
  """Runs code in a fresh `python -c`; the Code Judge text of PAPER.md §3.3, time fixed at 0.01 s."""
  with tempfile.TemporaryDirectory() as cwd:
    try:
      proc = subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True,
                            timeout=timeout_s, cwd=cwd)
      ok, reason, out, err = proc.returncode == 0, "", proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
      ok, reason = False, "worker_timeout"
      out, err = (e.stdout or b"").decode(errors="replace"), ""
  err = err.strip().splitlines()[-1] + "\n" if err.strip() else ""  # the exception line, as the wrapper prints
  lines = ["Tool call success" if ok else "Tool call failure"] + ([] if ok else [f"reason: {reason}"])
  lines += [f"stdout: {out[:1000]}"] if out else []
  lines += [f"stderr: {err[:1000]}"] if err else []
  text = "\n".join(lines + ["execution time: 0.01s"])
  return text if len(text) <= 256 else text[:128] + "...(truncated)..." + text[-128:]


def tool_turn(turn_text: str) -> str | None:
  """The environment turn answering the first call block of a turn, or None without one."""
  if "<tool_call>" not in turn_text or "</tool_call>" not in turn_text:
    return None
  block = _CALL.findall(turn_text)[0]
  try:
    call = json.loads(block)
    args = call["arguments"]
    result = run_python(args["code"], args.get("input", ""))
  except (ValueError, KeyError, TypeError) as e:
    result = f"Failed to decode tool call: {e}"
  return f"<|im_start|>user\n<tool_response>\n{result}\n</tool_response><|im_end|>\n<|im_start|>assistant\n<reason>"


def rollout(model, tokenizer: Tokenizer, prompt: str, budget: int, max_turns: int, temperature: float) -> str:
  ids = tokenizer.encode(prompt).ids
  start, im_end = len(ids), tokenizer.token_to_id("<|im_end|>")
  for _ in range(max_turns):
    room = budget - (len(ids) - start)
    if room <= 0:
      break
    sampling = dict(do_sample=True, temperature=temperature, top_k=0) if temperature > 0 else dict(do_sample=False)
    out = model.generate(torch.tensor([ids]), max_new_tokens=room, eos_token_id=im_end, pad_token_id=0,
                         **sampling)[0, len(ids):].tolist()
    ids += out
    env = tool_turn(tokenizer.decode(out, skip_special_tokens=False))
    if env is None or out[-1] != im_end:
      break
    env_ids = tokenizer.encode(env).ids
    if len(env_ids) >= budget - (len(ids) - start):
      break
    ids += env_ids
  return tokenizer.decode(ids[start:], skip_special_tokens=False)


def correct(response: str, answer: str) -> bool:
  boxed = _BOXED.findall(response)
  return bool(boxed) and verify(parse(f"${answer}$"), parse(f"${boxed[-1]}$"))


def evaluate(policy_dir: str, problems, budget: int, max_turns: int, temperature: float, seed: int) -> float:
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).eval()
  tokenizer = Tokenizer.from_file(os.path.join(policy_dir, "tokenizer.json"))
  with open(os.path.join(policy_dir, "rstar_chat_format.json"), encoding="utf-8") as f:
    fmt = chat.ChatFormat(**json.load(f))
  hits = 0
  with torch.no_grad():
    for problem in problems:
      response = rollout(model, tokenizer, chat.prompt_text(problem["problem"], fmt), budget, max_turns,
                         temperature)
      hits += correct(response, problem["answer"])
  return hits / len(problems)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", required=True, help="a run's workdir (policies/<phase>, data/eval.jsonl)")
  parser.add_argument("--phases", nargs="+", default=["sft", "stage3"])
  parser.add_argument("--problems", default=None, help="problems JSONL (default RUN/data/eval.jsonl)")
  parser.add_argument("--num_problems", type=int, default=100)
  parser.add_argument("--max_response_tokens", type=int, default=384)
  parser.add_argument("--max_turns", type=int, default=4)
  parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
  args = parser.parse_args(argv)
  torch.set_num_threads(args.threads)
  path = args.problems or os.path.join(args.run, "data", "eval.jsonl")
  with open(path, encoding="utf-8") as f:
    problems = [json.loads(line) for line in f][:args.num_problems]
  results = {phase: evaluate(os.path.join(args.run, "policies", phase), problems, args.max_response_tokens,
                             args.max_turns, args.temperature, args.seed) for phase in args.phases}
  mode = "greedy" if args.temperature == 0 else f"temperature {args.temperature}"
  print(f"transformers {transformers.__version__}, {mode}, {len(problems)} problems, subprocess tool")
  print("| phase | accuracy |\n|---|---|")
  for phase, accuracy in results.items():
    print(f"| {phase} | {accuracy:.3f} |")
  first, last = args.phases[0], args.phases[-1]
  print(f"gain {last} - {first}: {results[last] - results[first]:+.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
